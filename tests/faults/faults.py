"""The faults the suite injects: how each starts and ends, and which cache tier it takes down.

A fault with a ``tier`` is a backend outage: the sidecar must pass requests through
(``X-LLMCache: bypass``), count the backend's errors, and serve hits from that tier again by
itself within seconds of the backend's return.  An upstream fault (``tier`` None) acts on a
share of the requests that reach the upstream; the client must see exactly the upstream's
error (its 5xx, a 504 for a stall past the timeout, a cut), never one of the sidecar's, and
nothing of it may be stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tests.faults.backends import FlakyEmbedder, MilvusProcess
from tests.upstream import TestUpstream


@dataclass
class Targets:
    """What the faults act on."""

    redis: Any  # tests.conftest.RedisServer
    milvus: MilvusProcess
    upstream: TestUpstream
    embedder: FlakyEmbedder
    #: the sidecar's upstream_timeout_seconds (the timeout fault stalls longer than that)
    upstream_timeout: float


Action = Callable[[Targets], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    name: str
    #: the cache tier it takes down (``exact`` / ``semantic``), None for an upstream fault
    tier: str | None
    #: the ``backend`` label of ``llmcache_backend_errors_total`` it must raise
    backend: str | None
    #: the name ``/admin/stats`` lists under ``degraded`` while it lasts
    degraded: str | None
    inject: Action
    restore: Action
    what: str


async def _stop_redis(t: Targets) -> None:
    await asyncio.to_thread(t.redis.stop)


async def _start_redis(t: Targets) -> None:
    await asyncio.to_thread(t.redis.start)


async def _stop_milvus(t: Targets) -> None:
    await asyncio.to_thread(t.milvus.stop)


async def _start_milvus(t: Targets) -> None:
    await asyncio.to_thread(t.milvus.start)


async def _embedder_fails(t: Targets) -> None:
    t.embedder.failing = True


async def _embedder_works(t: Targets) -> None:
    t.embedder.failing = False


#: share of the requests reaching the upstream that an upstream fault acts on
UPSTREAM_FAULT_RATE = 0.5


def _upstream(**controls: Any) -> tuple[Action, Action]:
    """Set the upstream's fault controls (callables get the targets), then put them back."""

    async def inject(t: Targets) -> None:
        for name, value in controls.items():
            setattr(t.upstream, name, value(t) if callable(value) else value)

    async def restore(t: Targets) -> None:
        t.upstream.delay = t.upstream.token_interval = 0.0
        t.upstream.fail_status = t.upstream.cut_after = t.upstream.error_after = None
        t.upstream.fault_rate = 1.0

    return inject, restore


def _fault(name: str, actions: tuple[Action, Action], what: str, *, tier: str | None = None,
           backend: str | None = None, degraded: str | None = None) -> Fault:
    return Fault(name, tier, backend, degraded, actions[0], actions[1], what)


FAULTS: dict[str, Fault] = {f.name: f for f in (
    _fault("redis", (_stop_redis, _start_redis), "redis-server killed, restarted on the same port (empty)",
           tier="exact", backend="redis", degraded="redis"),
    _fault("milvus", (_stop_milvus, _start_milvus), "Milvus server process killed, restarted on the same port and data",
           tier="semantic", backend="milvus", degraded="semantic"),
    _fault("embedder", (_embedder_fails, _embedder_works), "every embedding call raises",
           tier="semantic", backend="embedder", degraded="semantic"),
    _fault("upstream-slow", _upstream(delay=0.3, token_interval=0.02), "300 ms before the answer, 20 ms between chunks"),
    _fault("upstream-timeout", _upstream(delay=lambda t: t.upstream_timeout + 1.0, fault_rate=UPSTREAM_FAULT_RATE),
           "half the calls stall past the sidecar's upstream timeout"),
    _fault("upstream-5xx", _upstream(fail_status=503, fault_rate=UPSTREAM_FAULT_RATE), "half the calls get a 503"),
    _fault("upstream-cut", _upstream(cut_after=3, fault_rate=UPSTREAM_FAULT_RATE),
           "half the calls cut: streams after 3 chunks, JSON half way"),
    _fault("upstream-error-event", _upstream(error_after=3, fault_rate=UPSTREAM_FAULT_RATE),
           "half the streams end in an error event after 3 chunks"),
)}
