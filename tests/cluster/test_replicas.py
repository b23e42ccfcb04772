"""Several sidecar replicas sharing their tiers stay correct under concurrent load: on a Redis
Cluster (exact tier), and on one Redis plus one Milvus Lite (both tiers, the real model)."""

from __future__ import annotations

import asyncio
from typing import Any

from llmcache_sidecar import state
from llmcache_sidecar.events import FOLLOWER
from llmcache_sidecar.invalidation import (
    activate_revision,
    invalidate_milvus,
    invalidate_redis,
    redis_client,
)

from tests.cluster.conftest import RedisClusterServer
from tests.cluster.fleet import check_fleet
from tests.semantic import conftest as semantic_fixtures

semantic_sidecar_factory = semantic_fixtures.semantic_sidecar_factory
cache_name = semantic_fixtures.cache_name
milvus_lite_path = semantic_fixtures.milvus_lite_path

REPLICAS = 3


async def announce_and_invalidate(url: str, cache: str, replicas: int) -> int:
    """What the operator's switch does on Redis; returns how many exact entries it deleted."""
    async with redis_client(url) as client:
        assert await activate_revision(client, cache, "rev-b", "rev-a") == replicas, "every replica heard it"
        return await invalidate_redis(client, cache, revision="rev-a")


async def test_replicas_sharing_a_redis_cluster(sidecar_factory: Any, redis_cluster: RedisClusterServer,
                                                client_for: Any, upstream: Any) -> None:
    handles = [await sidecar_factory(redis_url=redis_cluster.url, cache_name="fleet", model_revision="rev-a")
               for _ in range(REPLICAS)]
    for handle in handles:
        await asyncio.wait_for(handle.app[FOLLOWER].synced.wait(), 15)
    deleted: list[int] = []

    async def switch() -> None:
        deleted.append(await announce_and_invalidate(redis_cluster.url, "fleet", REPLICAS))

    def set_revision(revision: str) -> None:
        upstream.revision = revision

    await check_fleet([client_for(handle) for handle in handles],
                      lambda: [handle.app[state.REVISION].active for handle in handles], switch, set_revision)
    assert deleted[0] >= 12, "revision A's entries were deleted"
    assert all(redis_cluster.keys_by_node("llmcache:fleet:rev-b:*")), "revision B's entries spread over every node"


async def test_replicas_sharing_one_redis_and_one_milvus_lite(semantic_sidecar_factory: Any, redis_server: Any,
                                                              milvus_lite_path: str, cache_name: str,
                                                              client_for: Any, upstream: Any) -> None:
    handles = [await semantic_sidecar_factory(model_revision="rev-a") for _ in range(REPLICAS)]
    for handle in handles:
        await asyncio.wait_for(handle.app[FOLLOWER].synced.wait(), 15)
    deleted: list[tuple[int, int]] = []

    async def switch() -> None:
        exact = await announce_and_invalidate(redis_server.url, cache_name, REPLICAS)
        deleted.append((exact, await invalidate_milvus(milvus_lite_path, cache_name, revision="rev-a")))

    def set_revision(revision: str) -> None:
        upstream.revision = revision

    await check_fleet([client_for(handle) for handle in handles],
                      lambda: [handle.app[state.REVISION].active for handle in handles], switch, set_revision)
    exact, semantic = deleted[0]
    assert exact >= 12 and semantic >= 1, deleted
