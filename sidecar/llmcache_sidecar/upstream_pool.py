"""The pooled upstream session, replaceable when the model revision switches.

Keep-alive connections through a ClusterIP Service stay on the pods they were opened to: after
the operator points the Service at the new revision's pods, a sidecar that kept its pool would
go on talking to the old revision.  :meth:`UpstreamPool.recycle` therefore starts a fresh
session (new connections, so the new pods) for every request from then on, and closes the old
one once the requests still running on it must have ended (the upstream timeout bounds them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

log = logging.getLogger(__name__)


class UpstreamPool:
    def __init__(self, factory: Callable[[], aiohttp.ClientSession], retire_after_seconds: float) -> None:
        self._factory = factory
        self._retire_after = retire_after_seconds
        #: the session every new upstream request uses
        self.session = factory()
        self._retiring: dict[aiohttp.ClientSession, asyncio.Task[None]] = {}

    def recycle(self) -> None:
        """New requests get new connections; requests in flight finish on the old ones."""
        old = self.session
        self.session = self._factory()
        task = asyncio.get_running_loop().create_task(self._retire(old), name="llmcache-upstream-retire")
        self._retiring[old] = task
        log.info("upstream connections recycled (the old pool closes within %.0fs)", self._retire_after)

    async def _retire(self, old: aiohttp.ClientSession) -> None:
        try:
            await asyncio.sleep(self._retire_after)
        finally:
            self._retiring.pop(old, None)
            await old.close()

    async def close(self) -> None:
        for task in list(self._retiring.values()):
            task.cancel()
        await asyncio.gather(*self._retiring.values(), return_exceptions=True)
        await self.session.close()
