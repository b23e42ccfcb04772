"""Back-off after a backend failure, and the revision a request captures."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter

from llmcache_sidecar.health import BackendHealth
from llmcache_sidecar.revision import RevisionState


def test_a_failed_backend_is_skipped_until_the_back_off_ends_then_recovers() -> None:
    errors = Counter("errors", "errors", registry=CollectorRegistry())
    health = BackendHealth("redis", errors, backoff=0.05)
    assert health.available() and health.report()["healthy"]
    health.failed(ConnectionError("refused"))
    assert not health.available()
    report = health.report()
    assert report["healthy"] is False and report["lastError"] == "ConnectionError: refused"
    assert report["downSince"] is not None and errors._value.get() == 1
    time.sleep(0.06)
    assert health.available()  # one more try is allowed ...
    health.failed(ConnectionError("still refused"))
    assert not health.available()  # ... and failing again backs off again
    time.sleep(0.06)
    health.succeeded()
    assert health.available() and health.report() == {"healthy": True, "errors": 2,
                                                      "lastError": "ConnectionError: still refused",
                                                      "downSince": None}


def test_revision_switch() -> None:
    revision = RevisionState("r1")
    captured = revision.active
    assert not revision.switch("r1")
    assert revision.switch("r2")
    assert revision.active == "r2" and not revision.is_active(captured) and revision.is_active("r2")
