"""Rollouts that do not go the happy way: a failing or slow revision, Redis away during the
switch, an operator restarted in the middle of one, and an external vLLM."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmcache_operator import kube, names
from llmcache_operator.settings import OperatorConfig
from llmcache_sidecar.invalidation import active_revision_key
from tests.operator.conftest import Cluster, StartOperator
from tests.rollout.conftest import CACHE, FAST, REV_A, REV_B, RolloutWorld, cache_spec, vllm
from tests.rollout.test_rollout import body, client, revision_of, switched
from tests.semantic.conftest import MilvusServer
from tests.sidecar.calls import HIT, MISS, chat


def condition(world_or_status: Any, type_: str = "RolloutComplete") -> dict[str, Any]:
    status = world_or_status.status() if isinstance(world_or_status, RolloutWorld) else world_or_status
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


def old_entries(redis: Any, count: int, revision: str = REV_A) -> list[str]:
    """Entries as a sidecar would have left them (the operator only looks at their keys)."""
    keys = [f"llmcache:{CACHE}:{revision}::e:{index:064x}" for index in range(count)]
    redis.client().mset(dict.fromkeys(keys, b"{}"))
    return keys


def serving(cluster: Cluster) -> str:
    service = cluster.obj(kube.SERVICES, names.vllm_service_name(CACHE))
    assert service is not None
    configmap = cluster.obj(kube.CONFIGMAPS, names.sidecar_configmap_name(CACHE))
    assert configmap is not None
    configured = yaml.safe_load(configmap["data"]["config.yaml"])["model_revision"]
    assert service["spec"]["selector"][names.REVISION_LABEL] == names.revslug(configured)
    return configured


async def test_a_revision_that_fails_leaves_the_old_one_serving_and_says_why(world: RolloutWorld) -> None:
    cluster = world.cluster
    sidecar = await world.start_sidecar()
    async with client(sidecar) as api:
        assert (await chat(api, **body("Is the old model still here?"))).cache == MISS
    await cluster.patch_cache(CACHE, {"model": {"revision": REV_B}})
    await cluster.wait_for(lambda: cluster.obj(kube.DEPLOYMENTS, vllm(REV_B)), what="revision B's Deployment")
    # What the Deployment controller reports when the new pods never become available.
    await cluster.patch_object(kube.DEPLOYMENTS, vllm(REV_B), {"status": {"conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "demo-vllm-rev-b-7d9" has timed out progressing.'},
    ]}})
    await cluster.wait_for(lambda: world.status().get("phase") == "Degraded", what="the rollout failed")
    status = world.status()
    assert status["phase"] == "Degraded" and status["activeRevision"] == REV_A
    failed = condition(status)
    assert (failed["status"], failed["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert "has timed out progressing" in failed["message"] and f"{REV_A} still serves" in failed["message"]
    assert serving(cluster) == REV_A
    assert cluster.names(kube.DEPLOYMENTS) == {vllm(REV_A), vllm(REV_B)}
    assert world.redis.client().get(active_revision_key(CACHE)) == REV_A.encode()
    async with client(sidecar) as api:
        again = await chat(api, **body("Is the old model still here?"))
    assert (again.cache, revision_of(again)) == (HIT, REV_A)
    assert await world.revisions() == [REV_A]
    # Rolling back to A ends it: B's Deployment goes, nothing was invalidated.
    await cluster.patch_cache(CACHE, {"model": {"revision": REV_A}})
    await cluster.wait_for(lambda: "rollout" not in world.status() and world.status().get("phase") == "Ready",
                           what="back to Ready on A")
    assert cluster.names(kube.DEPLOYMENTS) == {vllm(REV_A)}
    assert condition(world)["status"] == "True" and "invalidations" not in world.status()


class TestDeadline:
    @pytest.fixture
    def operator_config(self) -> OperatorConfig:
        return dataclasses.replace(FAST, rollout_deadline_seconds=1)

    async def test_a_revision_not_ready_by_the_deadline_fails_its_rollout(self, world: RolloutWorld) -> None:
        cluster = world.cluster
        await cluster.patch_cache(CACHE, {"model": {"revision": REV_B}})
        await cluster.wait_for(lambda: condition(world)["reason"] == "DeadlineExceeded", timeout=20,
                               what="the deadline")
        assert f"not ready after 1s (Deployment {vllm(REV_B)}: 0/1 replicas ready)" in condition(world)["message"]
        assert world.status()["phase"] == "Degraded" and serving(cluster) == REV_A
        # Late is better than never: once ready after all, it is switched to.
        await cluster.make_ready(kube.DEPLOYMENTS, vllm(REV_B))
        await cluster.wait_for(switched(world, REV_B), what="the switch")
        assert serving(cluster) == REV_B


async def test_redis_away_during_the_switch_is_retried_and_the_old_deployment_still_goes(world: RolloutWorld) -> None:
    cluster = world.cluster
    left = old_entries(world.redis, 3)
    await cluster.patch_cache(CACHE, {"model": {"revision": REV_B}})
    await cluster.wait_for(lambda: cluster.obj(kube.DEPLOYMENTS, vllm(REV_B)), what="revision B's Deployment")
    world.redis.pause()
    try:
        await cluster.make_ready(kube.DEPLOYMENTS, vllm(REV_B))
        await cluster.wait_for(lambda: condition(world)["reason"] == "BackendUnavailable",
                               timeout=30, what="the switch waiting for Redis")
        assert cluster.names(kube.DEPLOYMENTS) == {vllm(REV_B)}, "the old revision's GPUs are released anyway"
        assert serving(cluster) == REV_B
        assert world.status()["phase"] == "RollingOut"
        assert "waiting for Redis at" in condition(world)["message"]
    finally:
        world.redis.resume()
    await cluster.wait_for(switched(world, REV_B), timeout=30, what="the switch completed once Redis is back")
    assert world.redis.client().exists(*left) == 0
    assert world.status()["invalidations"][-1]["exactEntries"] == 3
    assert world.redis.client().get(active_revision_key(CACHE)) == REV_B.encode()


async def test_an_operator_restarted_in_the_middle_of_a_switch_completes_it(
        cluster: Cluster, start_operator: StartOperator, redis_server: Any, milvus_server: MilvusServer) -> None:
    """The state a stopped operator left: the rollout committed (``Switching``), nothing else done."""
    await cluster.create_cache(CACHE, cache_spec(redis_server.url, milvus_server.uri, revision=REV_B))
    await cluster.patch_object(kube.LLMCACHES, CACHE, {"status": {
        "phase": "RollingOut", "activeRevision": REV_A,
        "rollout": {"revision": REV_B, "previous": REV_A, "startedAt": "2026-01-01T00:00:00Z",
                    "phase": "Switching", "reason": "Switching", "message": "", "previousRemoved": False},
    }})
    left = old_entries(redis_server, 2)
    await start_operator(config=FAST)
    await cluster.wait_for(lambda: cluster.cache(CACHE).get("status", {}).get("invalidations"), what="the switch")
    status = cluster.cache(CACHE)["status"]
    assert status["activeRevision"] == REV_B and "rollout" not in status
    assert status["invalidations"][-1]["exactEntries"] == 2 and redis_server.client().exists(*left) == 0
    assert serving(cluster) == REV_B
    assert cluster.names(kube.DEPLOYMENTS) == {vllm(REV_B)}


async def test_an_external_vllm_invalidates_at_once(
        cluster: Cluster, start_operator: StartOperator, redis_server: Any, milvus_server: MilvusServer,
        tmp_path: Path) -> None:
    await start_operator(config=FAST)
    spec = cache_spec(redis_server.url, milvus_server.uri, vllm={"external": {"url": "http://vllm.example:8000"}})
    await cluster.create_cache(CACHE, spec)
    await cluster.wait_for(lambda: cluster.cache(CACHE).get("status", {}).get("phase") == "Ready", what="Ready")
    left = old_entries(redis_server, 4)
    kept = old_entries(redis_server, 1, revision="other")
    await cluster.patch_cache(CACHE, {"model": {"revision": REV_B}})
    await cluster.wait_for(lambda: cluster.cache(CACHE)["status"].get("invalidations"), what="the invalidation")
    status = cluster.cache(CACHE)["status"]
    assert status["invalidations"][-1]["revision"] == REV_A and status["invalidations"][-1]["exactEntries"] == 4
    assert status["activeRevision"] == REV_B and status["phase"] == "Ready"
    assert redis_server.client().exists(*left) == 0 and redis_server.client().exists(*kept) == 1
    configmap = cluster.obj(kube.CONFIGMAPS, names.sidecar_configmap_name(CACHE))
    assert yaml.safe_load(configmap["data"]["config.yaml"])["model_revision"] == REV_B
    assert cluster.names(kube.DEPLOYMENTS) == set()


async def test_a_new_cache_overwrites_an_active_revision_left_by_an_earlier_one(
        cluster: Cluster, start_operator: StartOperator, redis_server: Any, milvus_server: MilvusServer) -> None:
    """Sidecars trust the key over their file: a key left in an external Redis by a deleted cache
    of the same name must not survive the new cache's creation."""
    redis_server.client().set(active_revision_key(CACHE), "left-over")
    await start_operator(config=FAST)
    await cluster.create_cache(CACHE, cache_spec(redis_server.url, milvus_server.uri))
    await cluster.wait_for(lambda: redis_server.client().get(active_revision_key(CACHE)) == REV_A.encode(),
                           what="the key naming the new cache's revision")
