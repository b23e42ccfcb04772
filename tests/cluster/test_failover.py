"""A primary of a replicated Redis Cluster fails over: the sidecar passes requests through
meanwhile, then serves from the promoted replica (entries stored before included), and still
hears revision switches (the killed primary owned the events channel's slot)."""

from __future__ import annotations

import asyncio
from typing import Any

from llmcache_sidecar import state
from llmcache_sidecar.events import FOLLOWER
from llmcache_sidecar.invalidation import (
    activate_revision,
    events_channel,
    redis_client,
)

from tests.cluster.conftest import RedisClusterServer
from tests.cluster.test_cluster_sidecar import CACHE, admin, body, expected, following
from tests.rollout.conftest import wait_until
from tests.sidecar.calls import HIT, MISS, chat

STORED = 30


def replicated(cluster: RedisClusterServer, pattern: str, count: int) -> bool:
    """Every key is on its primary's replica too (replication is asynchronous)."""
    return sum(len(node.keys(pattern)) for node in cluster.nodes if node.running) == 2 * count


async def test_a_primary_failover_is_survived(sidecar_factory: Any, replicated_cluster: RedisClusterServer,
                                              client_for: Any, upstream: Any) -> None:
    cluster = replicated_cluster
    handle = await following(sidecar_factory, cluster.url, model_revision="rev-a")
    follower = handle.app[FOLLOWER]
    api = client_for(handle)
    questions = [f"Stored before the failover {i}?" for i in range(STORED)]
    for question in questions:
        assert (await chat(api, **body(question))).cache == MISS
    await wait_until(lambda: replicated(cluster, f"llmcache:{CACHE}:rev-a:*", STORED), what="the replicas in sync")
    status, report = await admin(handle, "GET", "/admin/stats")
    assert (status, report["entries"]["exact"]) == (200, STORED), "counted on the primaries only"

    victim = cluster.owner(events_channel(CACHE))
    cluster.stop(victim)
    for i in range(3):  # before the promotion: answered all the same (pass-through or cache)
        answer = await chat(api, **body(f"During the failover {i}?"))
        assert answer.content == expected(f"During the failover {i}?")
    await asyncio.to_thread(cluster.wait_ok)  # a replica took over the slots

    async def all_hits() -> bool:
        answers = [await chat(api, **body(question)) for question in questions]
        assert all(answer.content == expected(question) for answer, question in zip(answers, questions, strict=True))
        return all(answer.cache == HIT for answer in answers)

    await wait_until(all_hits, timeout=30, what="every entry served again, from the promoted replica too")

    upstream.revision = "B"
    async with redis_client(cluster.url) as client:
        await wait_until(lambda: _heard(client), timeout=30, what="the follower subscribed on the new owner")
    await wait_until(lambda: handle.app[state.REVISION].active == "rev-b", what="the switch after the failover")
    assert follower.connections >= 2, "the subscription was on the failed primary: it reconnected"

    await asyncio.to_thread(cluster.start, victim)  # back, as a replica of the promoted node
    answer = await chat(api, **body(questions[0]))
    assert (answer.cache, answer.content) == (MISS, expected(questions[0], "B"))


async def _heard(client: Any) -> bool:
    return await activate_revision(client, CACHE, "rev-b", "rev-a") >= 1
