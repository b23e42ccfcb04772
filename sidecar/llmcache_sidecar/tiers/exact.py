"""The exact tier: stored answers by exact key, on Redis or (without Redis) in process.

Both implementations have the same semantics: a value lives ``ttl`` seconds; invalidation by
revision, tenant or everything of one cache; ``count`` of one cache's entries.  Each counts the
invalidations of a cache (its *generation*); a store given the generation read before the
upstream call keeps its value only if no invalidation began since, so an answer asked for
before an invalidation never outlives it.  Every Redis call
is bounded by a short socket timeout and is not retried (the proxy passes the request through
instead, see ``health.py``), except once on a connection error: a connection pooled before
Redis restarted is dead, and redis-py may only find out when it sends a command on it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Protocol

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from llmcache_sidecar.config import Settings
from llmcache_sidecar.invalidation import generation_key, invalidate_redis, key_pattern
from llmcache_sidecar.redis_client import RedisClient, open_redis
from llmcache_sidecar.tiers.get_batcher import GetBatcher


def dead_connection_retry() -> Retry:
    """One more attempt, on a new connection, only when the connection failed (refused, reset,
    closed by a restarted server); a timeout is never retried.  Without it each dead pooled
    connection failed one call after Redis came back, and put the tier in its back-off again."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def stats_key(cache: str) -> str:
    return f"llmcache:{cache}:stats"


def cache_of(key: str) -> str:
    """The cache name of an entry key (``llmcache:<cache>:...``)."""
    return key.split(":", 2)[1]


def key_matches(key: str, cache: str, *, revision: str | None, tenant: str | None) -> bool:
    parts = key.split(":", 5)
    return (len(parts) == 6 and parts[0] == "llmcache" and parts[1] == cache and parts[4] == "e"
            and (revision is None or parts[2] == revision) and (tenant is None or parts[3] == tenant))


class ExactTier(Protocol):
    #: "redis" or "memory" (the backend label of metrics and /admin/stats)
    backend: str

    async def get(self, key: str) -> bytes | None: ...

    async def lookup(self, key: str, cache: str) -> tuple[bytes | None, int]:
        """The value of ``key`` and the generation of ``cache``, read in one round trip."""
        ...

    async def generation(self, cache: str) -> int:
        """How many invalidations of ``cache`` have begun."""
        ...

    async def set(self, key: str, value: bytes, ttl: int, *, generation: int | None = None) -> bool:
        """Write ``value``.  With ``generation`` (read before the answer was asked for): if an
        invalidation of the cache began since, the value is not kept; return whether it was."""
        ...

    async def invalidate(self, cache: str, *, revision: str | None = None, tenant: str | None = None) -> int:
        """Delete one cache's entries (of one revision / tenant when given); return how many."""
        ...

    async def count(self, cache: str) -> int: ...

    async def add_stats(self, key: str, counts: dict[str, int]) -> None:
        """Add ``counts`` to the fleet-wide statistics hash ``key`` (no-op without a shared store)."""
        ...

    async def read_stats(self, key: str) -> dict[str, int] | None:
        """The fleet-wide statistics hash (None without a shared store)."""
        ...

    async def close(self) -> None: ...


class RedisExactTier:
    backend = "redis"

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        # concurrent lookups share one round trip (a cluster's keys live in several slots)
        get_many = client.mget_nonatomic if isinstance(client, RedisCluster) else client.mget
        self._gets = GetBatcher(client.get, get_many)  # type: ignore[arg-type]  # decode_responses=False: bytes
        #: values being written: the proxy answers before it stores, and a repeat must find them
        self._writing: dict[str, bytes] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisExactTier:
        assert settings.redis_url is not None
        timeout = settings.backend_timeout_seconds
        # one server or a redis+cluster:// URL; a password in the URL counts over the Secret's
        client = open_redis(settings.redis_url, password=settings.redis_password, timeout=timeout,
                            retry=dead_connection_retry(), health_check_interval=0, decode_responses=False)
        return cls(client)

    async def get(self, key: str) -> bytes | None:
        writing = self._writing.get(key)
        if writing is not None:
            return writing
        return await self._gets.get(key)

    async def lookup(self, key: str, cache: str) -> tuple[bytes | None, int]:
        # both GETs join the same batch: one MGET
        value, generation = await asyncio.gather(self.get(key), self._gets.get(generation_key(cache)))
        return value, int(generation or 0)

    async def generation(self, cache: str) -> int:
        return int(await self._gets.get(generation_key(cache)) or 0)

    async def set(self, key: str, value: bytes, ttl: int, *, generation: int | None = None) -> bool:
        """Write ``value``; until Redis has it (and, with ``generation``, until it is known to be
        kept), this process's :meth:`get` returns it.  The check comes after the write: an
        invalidation that began before the check is seen by it, and one that begins after it
        scans a key already written.  Another process may read the value in the one round trip
        between the write and its deletion."""
        self._writing[key] = value
        try:
            await self.client.set(key, value, ex=ttl)
            if generation is None or await self.generation(cache_of(key)) == generation:
                return True
            await self.client.unlink(key)
            return False
        finally:
            if self._writing.get(key) is value:
                del self._writing[key]

    async def invalidate(self, cache: str, *, revision: str | None = None, tenant: str | None = None) -> int:
        """SCAN + UNLINK in batches (:mod:`llmcache_sidecar.invalidation`): never blocks Redis."""
        for key in [key for key in self._writing if key_matches(key, cache, revision=revision, tenant=tenant)]:
            del self._writing[key]
        return await invalidate_redis(self.client, cache, revision=revision, tenant=tenant)

    async def count(self, cache: str) -> int:
        total = 0
        async for _ in self.client.scan_iter(match=key_pattern(cache), count=1000):
            total += 1
        return total

    async def add_stats(self, key: str, counts: dict[str, int]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for field, amount in counts.items():
                pipe.hincrby(key, field, amount)
            await pipe.execute()

    async def read_stats(self, key: str) -> dict[str, int] | None:
        raw: dict[bytes, bytes] = await self.client.hgetall(key)  # type: ignore[assignment,misc]
        return {field.decode(): int(value) for field, value in raw.items()}

    async def close(self) -> None:
        await self._gets.close()
        await self.client.aclose()


class MemoryExactTier:
    """An in-process LRU with per-entry expiry, for a sidecar without Redis."""

    backend = "memory"

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._generations: dict[str, int] = {}

    async def get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return item[1]

    async def lookup(self, key: str, cache: str) -> tuple[bytes | None, int]:
        return await self.get(key), self._generations.get(cache, 0)

    async def generation(self, cache: str) -> int:
        return self._generations.get(cache, 0)

    async def set(self, key: str, value: bytes, ttl: int, *, generation: int | None = None) -> bool:
        if generation is not None and self._generations.get(cache_of(key), 0) != generation:
            return False
        self._entries[key] = (time.monotonic() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True

    async def invalidate(self, cache: str, *, revision: str | None = None, tenant: str | None = None) -> int:
        self._generations[cache] = self._generations.get(cache, 0) + 1
        doomed = [key for key in self._entries if key_matches(key, cache, revision=revision, tenant=tenant)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    async def count(self, cache: str) -> int:
        now = time.monotonic()
        expired = [key for key, (expires, _) in self._entries.items() if expires <= now]
        for key in expired:
            del self._entries[key]
        return sum(1 for key in self._entries if key_matches(key, cache, revision=None, tenant=None))

    async def add_stats(self, key: str, counts: dict[str, int]) -> None:
        return None

    async def read_stats(self, key: str) -> dict[str, int] | None:
        return None

    async def close(self) -> None:
        self._entries.clear()


def make_exact_tier(settings: Settings) -> ExactTier:
    if settings.redis_url:
        return RedisExactTier.from_settings(settings)
    return MemoryExactTier(settings.memory_max_entries)
