"""Request, hit and saved-token counts: kept locally, and added to the fleet-wide Redis hash
``llmcache:<cache>:stats`` in batches by a background task, never on the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from llmcache_sidecar.health import BackendHealth
from llmcache_sidecar.tiers.exact import ExactTier, stats_key

log = logging.getLogger(__name__)

FLUSH_INTERVAL_SECONDS = 1.0

#: header value -> field of the stats hash counting it
_HIT_FIELDS = {"hit-exact": "hitsExact", "hit-semantic": "hitsSemantic"}


class Stats:
    def __init__(self, cache: str) -> None:
        self.key = stats_key(cache)
        #: everything since start, by field of the hash
        self.totals = {"requests": 0, "hitsExact": 0, "hitsSemantic": 0, "tokensSaved": 0}
        self._pending: dict[str, int] = {}

    def record(self, result: str, tokens_saved: int = 0) -> None:
        self._add("requests", 1)
        field = _HIT_FIELDS.get(result)
        if field is not None:
            self._add(field, 1)
        if tokens_saved:
            self._add("tokensSaved", tokens_saved)

    def _add(self, field: str, amount: int) -> None:
        self.totals[field] += amount
        self._pending[field] = self._pending.get(field, 0) + amount

    async def flush(self, tier: ExactTier, health: BackendHealth) -> None:
        """Add the pending counts to the hash; on failure keep them for the next flush."""
        if not self._pending or not health.available():
            return
        pending, self._pending = self._pending, {}
        try:
            await tier.add_stats(self.key, pending)
        except Exception as exc:  # noqa: BLE001 - any backend trouble: keep the counts, retry later
            for field, amount in pending.items():
                self._pending[field] = self._pending.get(field, 0) + amount
            health.failed(exc)
            log.debug("stats flush failed: %s", exc)
        else:
            health.succeeded()

    @contextlib.asynccontextmanager
    async def flushing(self, tier: ExactTier, health: BackendHealth,
                       interval: float = FLUSH_INTERVAL_SECONDS) -> AsyncIterator[None]:
        """Flush every ``interval`` seconds while the context is open, and once at its end."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                await self.flush(tier, health)

        task = asyncio.create_task(loop(), name="llmcache-stats-flush")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.flush(tier, health)
