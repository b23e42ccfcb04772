"""The exact tier on a real redis-server and in process: the same semantics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from llmcache_sidecar.config import Settings
from llmcache_sidecar.tiers.exact import ExactTier, MemoryExactTier, RedisExactTier, make_exact_tier, stats_key


@pytest.fixture(params=["redis", "memory"])
async def tier(request: pytest.FixtureRequest) -> AsyncIterator[ExactTier]:
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        made = make_exact_tier(Settings(upstream_url="http://up", redis_url=server.url))
        assert isinstance(made, RedisExactTier)
    else:
        made = make_exact_tier(Settings(upstream_url="http://up", memory_max_entries=100))
        assert isinstance(made, MemoryExactTier)
    yield made
    await made.close()


def k(cache: str = "c", revision: str = "r1", tenant: str = "", digest: str = "0" * 64) -> str:
    return f"llmcache:{cache}:{revision}:{tenant}:e:{digest}"


async def fill(tier: ExactTier) -> None:
    for key in [k(), k(digest="1" * 64), k(revision="r2"), k(tenant="alice"), k(revision="r2", tenant="alice"),
                k(tenant="bob"), k(cache="other"), k(revision="v[1]"), k(revision="v1")]:
        await tier.set(key, key.encode(), 60)


async def test_set_get_and_missing(tier: ExactTier) -> None:
    assert await tier.get(k()) is None
    await tier.set(k(), b"value\nwith newline", 60)
    assert await tier.get(k()) == b"value\nwith newline"


@pytest.mark.parametrize(("target", "deleted", "left"), [
    ({"revision": "r2"}, 2, 6),
    ({"tenant": "alice"}, 2, 6),
    ({"tenant": ""}, 5, 3),
    ({"revision": "v[1]"}, 1, 7),
    ({}, 8, 0),
])
async def test_invalidate(tier: ExactTier, target: dict[str, Any], deleted: int, left: int) -> None:
    await fill(tier)
    assert await tier.count("c") == 8
    assert await tier.invalidate("c", **target) == deleted
    assert await tier.count("c") == left
    assert await tier.get(k(cache="other")) is not None
    if "revision" in target:
        assert await tier.get(k(revision=target["revision"])) is None
        assert await tier.get(k(revision="v1")) is not None


async def test_invalidation_never_touches_the_stats_hash(redis_server: Any) -> None:
    tier = RedisExactTier.from_settings(Settings(upstream_url="http://up", redis_url=redis_server.url))
    try:
        await fill(tier)
        await tier.add_stats(stats_key("c"), {"requests": 3, "hitsExact": 1})
        await tier.add_stats(stats_key("c"), {"requests": 2})
        assert await tier.invalidate("c") == 8
        assert redis_server.client().hgetall("llmcache:c:stats") == {b"requests": b"5", b"hitsExact": b"1"}
    finally:
        await tier.close()


async def test_redis_entries_get_the_ttl(redis_server: Any) -> None:
    tier = RedisExactTier.from_settings(Settings(upstream_url="http://up", redis_url=redis_server.url))
    try:
        await tier.set(k(), b"x", 300)
        assert 0 < redis_server.client().ttl(k()) <= 300
    finally:
        await tier.close()


async def test_memory_tier_expires_entries() -> None:
    tier = MemoryExactTier(10)
    await tier.set(k(), b"x", 1)
    await tier.set(k(digest="1" * 64), b"y", 60)
    await asyncio.sleep(1.05)
    assert await tier.get(k()) is None
    assert await tier.count("c") == 1


async def test_memory_tier_evicts_the_least_recently_used() -> None:
    tier = MemoryExactTier(2)
    await tier.set(k(digest="a"), b"a", 60)
    await tier.set(k(digest="b"), b"b", 60)
    assert await tier.get(k(digest="a")) == b"a"  # a is now the most recently used
    await tier.set(k(digest="c"), b"c", 60)
    assert await tier.get(k(digest="b")) is None
    assert await tier.get(k(digest="a")) == b"a" and await tier.get(k(digest="c")) == b"c"


async def test_redis_down_raises_quickly_and_recovers(redis_server: Any) -> None:
    tier = RedisExactTier.from_settings(Settings(upstream_url="http://up", redis_url=redis_server.url,
                                                 backend_timeout_seconds=0.5))
    try:
        await tier.set(k(), b"x", 60)
        redis_server.stop()
        with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            await tier.get(k())
        redis_server.start()
        await tier.set(k(), b"back", 60)
        assert await tier.get(k()) == b"back"
    finally:
        await tier.close()


async def test_a_write_in_flight_is_served_until_redis_has_it_and_dropped_by_invalidation(redis_server: Any) -> None:
    """The proxy answers a miss before its SET completes: meanwhile this process's lookups get the
    value being written, and an invalidation that matches it stops serving it at once."""
    tier = make_exact_tier(Settings(upstream_url="http://up", redis_url=redis_server.url))
    other = make_exact_tier(Settings(upstream_url="http://up", redis_url=redis_server.url))  # another sidecar
    admin = redis.asyncio.from_url(redis_server.url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        writes = [asyncio.create_task(tier.set(key, b"answer", 60)) for key in (k(), k(tenant="alice"))]
        await asyncio.sleep(0.2)
        assert not any(write.done() for write in writes), "CLIENT PAUSE should hold the writes"
        assert await tier.get(k()) == b"answer" and await tier.get(k(tenant="alice")) == b"answer"
        assert await other.get(k()) is None, "only the writing process sees a write in flight"
        invalidating = asyncio.create_task(tier.invalidate("c", tenant="alice"))
        await asyncio.sleep(0.05)
        assert await tier.get(k(tenant="alice")) is None
        assert await tier.get(k()) == b"answer"
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
    await asyncio.gather(*writes, invalidating)
    assert await other.get(k()) == b"answer"
    for closing in (tier, other):
        await closing.close()
    await admin.aclose()


async def test_a_store_is_not_kept_if_an_invalidation_began_after_its_lookup(tier: ExactTier) -> None:
    """The generation read with the lookup (before the upstream call) guards the store: any
    invalidation of the cache since then and the answer is not kept; other caches' do not count."""
    value, asked_at = await tier.lookup(k(tenant="alice"), "c")
    assert value is None
    await tier.invalidate("c", tenant="bob")  # while the upstream call runs
    assert await tier.set(k(tenant="alice"), b"asked before", 60, generation=asked_at) is False
    assert await tier.get(k(tenant="alice")) is None
    _, now = await tier.lookup(k(tenant="alice"), "c")
    assert now == asked_at + 1 == await tier.generation("c")
    assert await tier.set(k(tenant="alice"), b"asked after", 60, generation=now) is True
    assert await tier.get(k(tenant="alice")) == b"asked after"
    _, other = await tier.lookup(k(cache="other"), "other")
    await tier.invalidate("c")
    assert await tier.set(k(cache="other"), b"x", 60, generation=other) is True


async def test_another_sidecars_invalidation_during_the_call_is_not_outlived(redis_server: Any) -> None:
    """Before the guard an invalidation's SCAN could pass while an answer was being asked for and
    the SET land after it: the entry outlived the invalidation.  Here another sidecar (or
    ``llmcache invalidate``) wipes the tenant between this one's lookup and its store."""
    tier = make_exact_tier(Settings(upstream_url="http://up", redis_url=redis_server.url))
    other = make_exact_tier(Settings(upstream_url="http://up", redis_url=redis_server.url))
    try:
        _, asked_at = await tier.lookup(k(tenant="alice"), "c")
        assert await other.invalidate("c", tenant="alice") == 0
        assert await tier.set(k(tenant="alice"), b"stale", 60, generation=asked_at) is False
        assert await other.get(k(tenant="alice")) is None and await tier.get(k(tenant="alice")) is None
    finally:
        await tier.close()
        await other.close()
