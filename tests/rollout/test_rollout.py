"""A model revision rollout end to end: real kopf on the emulator, real Redis, a Milvus Lite
server, two ``llmcache-sidecar`` processes and a test upstream whose answers name the revision."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import openai
import yaml
from pymilvus import MilvusClient

from llmcache_operator import kube, names
from llmcache_sidecar.invalidation import active_revision_key
from llmcache_sidecar.tiers.milvus_store import collection_name
from tests.rollout.conftest import CACHE, REV_A, REV_B, RolloutWorld, SidecarProcess, vllm, wait_until
from tests.sidecar.calls import HIT, MISS, chat, user

SEMANTIC = "hit-semantic"
#: two questions and a paraphrase of each (similar enough for the default threshold)
QUESTIONS = ("How do I reset my password?", "How can I cancel my subscription?")
PARAPHRASES = ("I forgot my password, how can I reset it?", "How do I cancel my subscription?")


def revision_of(answer: Any) -> str:
    """The revision an answer names (the test upstream starts each with ``[rev <revision>]``)."""
    match = re.match(r"\[rev ([^\]]+)\]", answer.content or "")
    assert match, answer.content
    return match.group(1)


def body(question: str) -> dict[str, Any]:
    return {"model": "test-model", "messages": user(question), "temperature": 0}


def client(sidecar: SidecarProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sidecar.api_url, api_key="test", max_retries=0, timeout=60)


def milvus_rows(world: RolloutWorld, revision: str) -> int:
    milvus = MilvusClient(uri=world.milvus.uri)
    try:
        if not milvus.has_collection(collection_name(CACHE)):
            return 0
        rows = milvus.query(collection_name(CACHE), filter=f'revision == "{revision}"', output_fields=["count(*)"])
        return int(rows[0]["count(*)"])
    finally:
        milvus.close()


def switched(world: RolloutWorld, revision: str) -> Any:
    """The rollout to ``revision`` has completed (``activeRevision`` names it from the moment the
    Service switches; ``status.rollout`` goes away when the switch is done)."""
    return lambda: world.status().get("activeRevision") == revision and "rollout" not in world.status()


def redis_entries(world: RolloutWorld, revision: str) -> list[str]:
    return world.redis.scan(f"llmcache:{CACHE}:{revision}:*")


async def both_on(world: RolloutWorld, revision: str) -> None:
    async def switched() -> bool:
        return await world.revisions() == [revision] * len(world.sidecars)

    await wait_until(switched, what=f"every sidecar on revision {revision}")


async def fill_revision_a(world: RolloutWorld, one: SidecarProcess, two: SidecarProcess) -> None:
    """Each sidecar answers (and stores) one question; each finds the other's exact entry, and a
    paraphrase of its own (semantic)."""
    for sidecar, question in ((one, QUESTIONS[0]), (two, QUESTIONS[1])):
        async with client(sidecar) as api:
            stored = await chat(api, **body(question))
        assert (stored.cache, revision_of(stored)) == (MISS, REV_A)
    for sidecar, question, paraphrase in ((two, QUESTIONS[0], PARAPHRASES[0]), (one, QUESTIONS[1], PARAPHRASES[1])):
        async with client(sidecar) as api:
            exact = await chat(api, **body(question))
        assert (exact.cache, revision_of(exact)) == (HIT, REV_A)
    for sidecar, paraphrase in ((one, PARAPHRASES[0]), (two, PARAPHRASES[1])):
        async with client(sidecar) as api:
            similar = await chat(api, **body(paraphrase))
        assert (similar.cache, revision_of(similar)) == (SEMANTIC, REV_A)

    async def durable() -> bool:
        return milvus_rows(world, REV_A) == 2

    await wait_until(durable, what="both semantic entries written to Milvus")
    assert len(redis_entries(world, REV_A)) == 2


async def test_a_revision_rollout_switches_every_sidecar_and_invalidates_the_old_revision(
        world: RolloutWorld) -> None:
    cluster = world.cluster
    one, two = await world.start_sidecar(), await world.start_sidecar()
    await fill_revision_a(world, one, two)

    await cluster.patch_cache(CACHE, {"model": {"revision": REV_B}})
    await cluster.wait_for(lambda: cluster.obj(kube.DEPLOYMENTS, vllm(REV_B)), what="revision B's Deployment")
    await cluster.wait_for(lambda: world.status().get("phase") == "RollingOut", what="phase RollingOut")
    # While B starts, A serves: Service, ConfigMap, sidecars and their entries stay on A.
    assert cluster.names(kube.DEPLOYMENTS) == {vllm(REV_A), vllm(REV_B)}
    assert world.routing.selected_revision() == REV_A
    assert world.status()["activeRevision"] == REV_A
    async with client(one) as api:
        assert revision_of(await chat(api, **body(QUESTIONS[1]))) == REV_A
    assert await world.revisions() == [REV_A, REV_A]

    await cluster.make_ready(kube.DEPLOYMENTS, vllm(REV_B))
    await cluster.wait_for(switched(world, REV_B), what="the switch to B completed")
    await both_on(world, REV_B)

    # No A answer from either sidecar, exact or semantic; B answers are cached under B.
    for sidecar in (one, two):
        async with client(sidecar) as api:
            for question in (*QUESTIONS, *PARAPHRASES):
                answer = await chat(api, **body(question))
                assert revision_of(answer) == REV_B, (answer.cache, answer.content)
    async with client(two) as api:
        again = await chat(api, **body(QUESTIONS[0]))
    assert (again.cache, revision_of(again)) == (HIT, REV_B)

    # Nothing of A is left anywhere; the status says how much was deleted.
    assert redis_entries(world, REV_A) == []
    assert milvus_rows(world, REV_A) == 0
    status = world.status()
    record = status["invalidations"][-1]
    assert (record["revision"], record["exactEntries"], record["semanticEntries"]) == (REV_A, 2, 2)
    assert status["phase"] == "Ready"
    rolled = next(c for c in status["conditions"] if c["type"] == "RolloutComplete")
    assert (rolled["status"], rolled["reason"]) == ("True", "RevisionActive")
    assert cluster.names(kube.DEPLOYMENTS) == {vllm(REV_B)}
    assert cluster.obj(kube.SERVICES, names.vllm_service_name(CACHE))["spec"]["selector"][names.REVISION_LABEL] == REV_B
    configmap = cluster.obj(kube.CONFIGMAPS, names.sidecar_configmap_name(CACHE))
    assert yaml.safe_load(configmap["data"]["config.yaml"])["model_revision"] == REV_B
    assert world.redis.client().get(active_revision_key(CACHE)) == REV_B.encode()


async def test_a_request_in_flight_across_the_switch_is_not_stored_under_the_new_revision(
        world: RolloutWorld) -> None:
    cluster = world.cluster
    sidecar = await world.start_sidecar()
    world.upstream.stall = True
    question = body("What changed in the new model?")
    async with client(sidecar) as api:
        pending = asyncio.create_task(chat(api, **question))
        while not world.upstream.calls["/v1/chat/completions"]:
            await asyncio.sleep(0.01)
        await cluster.patch_cache(CACHE, {"model": {"revision": REV_B}})
        await cluster.wait_for(lambda: cluster.obj(kube.DEPLOYMENTS, vllm(REV_B)), what="revision B's Deployment")
        await cluster.make_ready(kube.DEPLOYMENTS, vllm(REV_B))
        await both_on(world, REV_B)
        world.upstream.release()
        answered = await pending
        assert answered.cache == MISS
        await cluster.wait_for(switched(world, REV_B), what="the switch")
        await asyncio.sleep(0.5)  # give a wrong write time to land
        assert redis_entries(world, REV_B) == [] and redis_entries(world, REV_A) == []
        again = await chat(api, **question)
    assert (again.cache, revision_of(again)) == (MISS, REV_B)


async def test_a_sidecar_that_missed_the_event_catches_up_when_it_reconnects(world: RolloutWorld) -> None:
    cluster = world.cluster
    one, two = await world.start_sidecar(), await world.start_sidecar()
    redis = world.redis.client()
    subscriber = f"llmcache-events-{two.process.pid}"
    await wait_until(lambda: any(c["name"] == subscriber for c in redis.client_list()),
                     what="sidecar two subscribed")
    # Sidecar two is frozen, and its subscription cut, before the switch: the event is lost to it.
    two.pause()
    for connection in redis.client_list():
        if connection["name"] == subscriber:
            redis.execute_command("CLIENT", "KILL", "ID", connection["id"])
    await cluster.patch_cache(CACHE, {"model": {"revision": REV_B}})
    await cluster.wait_for(lambda: cluster.obj(kube.DEPLOYMENTS, vllm(REV_B)), what="revision B's Deployment")
    await cluster.make_ready(kube.DEPLOYMENTS, vllm(REV_B))
    await cluster.wait_for(switched(world, REV_B), what="the switch")
    assert (await one.stats(world.http))["revision"] == REV_B
    two.resume()
    # It finds its connection gone, reconnects, reads the active revision from the key.
    await both_on(world, REV_B)
    async with client(two) as api:
        answer = await chat(api, **body(QUESTIONS[0]))
    assert revision_of(answer) == REV_B
    assert "revision rev-b is active (read from the Redis key)" in two.log.read_text()
