"""Regressions the fault suite found in the sidecar's failure paths (one test per bug)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from llmcache_sidecar.tiers.exact import RedisExactTier

from tests.conftest import sidecar_settings


async def test_redis_restarted_the_exact_tier_does_not_fail_on_dead_pooled_connections(
        redis_server: Any, tmp_path: Path) -> None:
    """Connections pooled before a Redis restart are dead, and redis-py does not always notice
    before it sends a command on one.  Each used to fail one more call after Redis was back and
    put the tier into its one-second back-off again (the fault suite saw Redis recoveries of
    several seconds under load).  A command on a dead connection is now sent once more on a
    new one; with Redis back, no call fails."""
    tier = RedisExactTier.from_settings(sidecar_settings("http://unused", tmp_path, redis_url=redis_server.url))
    try:
        await asyncio.gather(*(tier.set(f"k{n}", b"v", 60) for n in range(8)))  # 8 pooled connections
        await asyncio.to_thread(redis_server.stop)
        await asyncio.to_thread(redis_server.start)  # same port, empty
        for n in range(8):
            assert await tier.get(f"k{n}") is None
            await tier.set(f"k{n}", b"again", 60)
        assert await tier.get("k0") == b"again"
    finally:
        await tier.close()


async def test_milvus_restarted_the_first_reconnect_succeeds(tmp_path: Path) -> None:
    """While Milvus is away, gRPC backs off its reconnects more and more (1 s, 1.6 s, 2.6 s, ...
    up to minutes), and pymilvus shares one connection per address: a new client inherited the
    backed-off connection and failed at once with "connection refused" although the server was
    back (the fault suite saw the semantic tier come back 5-9 s after Milvus).  The first
    reconnect after the server returns must succeed."""
    from llmcache_sidecar.tiers.milvus_store import MilvusError, MilvusStore

    from tests.faults.backends import MilvusProcess

    server = MilvusProcess(tmp_path / "milvus")
    await asyncio.to_thread(server.start)
    store = MilvusStore(server.uri, "regression", 4)
    try:
        await store.connect()
        await asyncio.to_thread(server.stop)
        for _ in range(4):  # the sidecar's background loop trying, as during an outage
            with pytest.raises(MilvusError):
                await store.connect()
            await asyncio.sleep(1.5)
        await asyncio.to_thread(server.start)  # same port, same data
        await store.connect()
        await store.ping()
    finally:
        await store.aclose()
        await asyncio.to_thread(server.stop)
