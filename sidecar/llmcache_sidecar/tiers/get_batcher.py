"""Coalesce the Redis GETs of concurrent requests into one round trip.

Under load many hits reach their lookup in the same turn of the event loop.  Sent one by one,
each GET costs a ``write`` to the Redis socket (which wakes redis-server: on a VM the most
expensive part of a hit), a pooled connection and redis-py's per-command work.  Queued instead,
they go out as one ``MGET`` at the end of the turn: one write, one reply, one command's overhead
for all of them.  A lone request pays one extra loop callback and still sends a plain ``GET``.

A failed round trip fails every GET of its batch with the same exception (each request then
passes through, as after any lookup failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence


class GetBatcher:
    """``get(key)`` for many concurrent callers, sent as one ``mget`` per loop turn.

    ``get_one(key)`` and ``get_many(keys)`` are the client's calls (``mget`` for one server,
    ``mget_nonatomic`` for a cluster, whose keys live in several slots)."""

    def __init__(self, get_one: Callable[[str], Awaitable[bytes | None]],
                 get_many: Callable[[Sequence[str]], Awaitable[Sequence[bytes | None]]]) -> None:
        self._get_one = get_one
        self._get_many = get_many
        self._queued: list[tuple[str, asyncio.Future[bytes | None]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> bytes | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._send_queued)  # runs after every request already handled in this turn
        self._queued.append((key, future))
        return await future

    def _send_queued(self) -> None:
        batch, self._queued = self._queued, []
        task = asyncio.get_running_loop().create_task(self._send(batch), name="llmcache-redis-gets")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[str, asyncio.Future[bytes | None]]]) -> None:
        try:
            if len(batch) == 1:
                values: Sequence[bytes | None] = [await self._get_one(batch[0][0])]
            else:
                values = await self._get_many([key for key, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (shutdown): so are the waiters
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), value in zip(batch, values, strict=True):
            if not future.done():  # its request may have been cancelled meanwhile
                future.set_result(value)

    async def close(self) -> None:
        """Wait for the round trips under way (their callers are waiting for them)."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
