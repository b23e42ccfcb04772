"""Concurrent exact-tier lookups share one Redis round trip, with the same answers as alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from llmcache_sidecar.config import Settings
from llmcache_sidecar.tiers.exact import RedisExactTier
from tests.conftest import free_port


def command_calls(redis_server: Any) -> dict[str, int]:
    stats = redis_server.client().info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}


@pytest.fixture
async def tier(redis_server: Any) -> Any:
    tier = RedisExactTier.from_settings(Settings(upstream_url="http://up", redis_url=redis_server.url))
    yield tier
    await tier.close()


async def test_concurrent_gets_are_one_mget_with_each_callers_value(tier: Any, redis_server: Any) -> None:
    for number in range(0, 20, 2):
        await tier.set(f"k{number}", f"value {number}".encode(), 60)
    redis_server.client().config_resetstat()
    values = await asyncio.gather(*(tier.get(f"k{number}") for number in range(20)))
    assert values == [f"value {n}".encode() if n % 2 == 0 else None for n in range(20)]
    calls = command_calls(redis_server)
    assert calls.get("mget") == 1 and "get" not in calls


async def test_a_lone_get_is_a_plain_get(tier: Any, redis_server: Any) -> None:
    await tier.set("alone", b"v", 60)
    redis_server.client().config_resetstat()
    assert await tier.get("alone") == b"v"
    assert await tier.get("missing") is None
    calls = command_calls(redis_server)
    assert calls.get("get") == 2 and "mget" not in calls


async def test_a_cancelled_caller_leaves_the_others_their_answers(tier: Any) -> None:
    await tier.set("a", b"1", 60)
    await tier.set("b", b"2", 60)
    first = asyncio.ensure_future(tier.get("a"))
    second = asyncio.ensure_future(tier.get("b"))
    await asyncio.sleep(0)  # both queued
    first.cancel()
    assert await second == b"2"
    assert first.cancelled()


async def test_a_failed_round_trip_fails_every_caller_of_the_batch() -> None:
    down = Settings(upstream_url="http://up", redis_url=f"redis://127.0.0.1:{free_port()}/0", backend_timeout_seconds=1)
    tier = RedisExactTier.from_settings(down)
    try:
        results = await asyncio.gather(*(tier.get(f"k{n}") for n in range(5)), return_exceptions=True)
        assert all(isinstance(result, RedisConnectionError) for result in results), results
        with pytest.raises(RedisConnectionError):
            await tier.get("alone")
    finally:
        await tier.close()
