"""Health of one cache backend, with a brief back-off after a failure.

While a backend is down, requests must not each pay a connection timeout: after a failure the
backend is skipped (the request passes through) until ``backoff`` seconds have passed; then the
next request tries it again, and one success brings it back.  No restart is ever needed.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

BACKOFF_SECONDS = 1.0


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class BackendHealth:
    """``errors_metric``: the ``llmcache_backend_errors_total{backend=...}`` child to count into."""

    def __init__(self, name: str, errors_metric: _Counter | None = None, backoff: float = BACKOFF_SECONDS) -> None:
        self.name = name
        self.errors_metric = errors_metric
        self.backoff = backoff
        self.healthy = True
        self.errors = 0
        self.last_error: str | None = None
        self.down_since: float | None = None
        self._retry_at = 0.0

    def available(self) -> bool:
        """True if a call to the backend should be tried now."""
        return self.healthy or time.monotonic() >= self._retry_at

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.errors_metric is not None:
            self.errors_metric.inc()
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.healthy:
            self.healthy = False
            self.down_since = time.time()
        self._retry_at = time.monotonic() + self.backoff

    def succeeded(self) -> None:
        if not self.healthy:
            self.healthy = True
            self.down_since = None

    def report(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "errors": self.errors, "lastError": self.last_error,
                "downSince": self.down_since}
