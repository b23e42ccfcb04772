"""The exact tier, the shared counters, the revision events and every invalidation on a real
Redis Cluster (three primaries), through sidecars driven by the official openai client."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from llmcache_operator.stats import read_stats
from llmcache_sidecar import state
from llmcache_sidecar.config import Settings
from llmcache_sidecar.events import FOLLOWER
from llmcache_sidecar.invalidation import (
    activate_revision,
    invalidate_redis,
    redis_client,
)
from llmcache_sidecar.redis_client import cluster_startup, is_cluster_url, open_redis
from llmcache_sidecar.tiers.exact import RedisExactTier
from pydantic import ValidationError
from redis.asyncio.cluster import RedisCluster

from tests.cluster.conftest import PASSWORD, RedisClusterServer
from tests.conftest import sidecar_settings
from tests.rollout.conftest import wait_until
from tests.sidecar.calls import BYPASS, HIT, MISS, chat, metric_value, user
from tests.upstream import expected_chat

CACHE = "cl"
#: enough keys that every one of the three primaries holds some (a node left empty: p < 1e-10)
SPREAD = 60


def body(question: str) -> dict[str, Any]:
    return {"model": "test-model", "messages": user(question), "temperature": 0}


def expected(question: str, revision: str = "A") -> str:
    return expected_chat(body(question), revision)[0]


async def following(sidecar_factory: Any, url: str, **settings: Any) -> Any:
    """A sidecar on the cluster whose revision follower is subscribed and caught up."""
    handle = await sidecar_factory(redis_url=url, cache_name=CACHE, **settings)
    await asyncio.wait_for(handle.app[FOLLOWER].synced.wait(), 15)
    return handle


async def admin(handle: Any, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
    url = f"{handle.metrics_url.rstrip('/')}{path}"
    async with aiohttp.ClientSession() as http, http.request(method, url, json=payload) as response:
        return response.status, await response.json(content_type=None)


async def metrics_text(handle: Any) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{handle.metrics_url.rstrip('/')}/metrics") as response:
        return await response.text()


def test_cluster_urls_name_every_startup_node() -> None:
    assert is_cluster_url("redis+cluster://h:7000") and is_cluster_url("rediss+cluster://h")
    assert not is_cluster_url("redis://h:6379/0") and not is_cluster_url("unix:///run/redis.sock")
    assert cluster_startup("redis+cluster://u:p%40ss@h1:7000,h2,[::1]:7002/0?ssl_cert_reqs=none") == (
        "redis://u:p%40ss@h1:7000/0?ssl_cert_reqs=none", [("h1", 7000), ("h2", 6379), ("::1", 7002)])
    assert cluster_startup("rediss+cluster://h1:7000")[0] == "rediss://h1:7000"
    for bad in ("redis+cluster://", "redis+cluster://h:port", "redis://h:1"):
        with pytest.raises(ValueError):
            cluster_startup(bad)
    assert isinstance(open_redis("redis+cluster://h1:7000,h2:7001"), RedisCluster)
    assert not isinstance(open_redis("redis://h1:7000/0"), RedisCluster)


@pytest.mark.parametrize(("url", "why"), [
    ("redis+cluster://h:7000/1", "only database 0"),
    ("redis+cluster://h:7000,h2:port", "bad cluster node"),
    ("redis+cluster://", "at least one host"),
    ("redis://h:port/0", "Port could not be cast"),
    ("http://h:6379", "must start with redis://"),
])
def test_a_redis_url_the_client_cannot_use_is_a_refused_setting(url: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Settings(upstream_url="http://127.0.0.1:1", redis_url=url)
    for good in ("redis://h:6379/0", "rediss://h", "unix:///run/redis.sock", "redis+cluster://h1,h2:7001/0"):
        assert Settings(upstream_url="http://127.0.0.1:1", redis_url=good).redis_url == good


async def test_exact_hits_through_the_sidecar_with_entries_on_every_node(
        sidecar_factory: Any, redis_cluster: RedisClusterServer, client_for: Any) -> None:
    api = client_for(await sidecar_factory(redis_url=redis_cluster.url, cache_name=CACHE))
    questions = [f"Cluster question number {i}?" for i in range(SPREAD)]
    for question in questions:
        answer = await chat(api, **body(question))
        assert (answer.cache, answer.content) == (MISS, expected(question))
    for stream in (False, True):
        for question in questions[:10]:
            answer = await chat(api, stream=stream, **body(question))
            assert (answer.cache, answer.content) == (HIT, expected(question))
    by_node = redis_cluster.keys_by_node(f"llmcache:{CACHE}:default:*")
    assert sum(len(keys) for keys in by_node) == SPREAD
    assert all(by_node), f"entries per node: {[len(keys) for keys in by_node]}"


async def test_concurrent_lookups_on_every_node_each_get_their_own_value(
        redis_cluster: RedisClusterServer, tmp_path: Any) -> None:
    """Lookups made at the same moment are batched (one MGET per loop turn, split by slot on a
    cluster): each still gets its own key's value."""
    tier = RedisExactTier.from_settings(sidecar_settings("http://127.0.0.1:1", tmp_path, redis_url=redis_cluster.url))
    try:
        keys = [f"llmcache:{CACHE}:r:t:e:{i}" for i in range(SPREAD)]
        for key in keys:
            await tier.set(key, key.encode(), 60)
        values = await asyncio.gather(*(tier.get(key) for key in [*keys, f"llmcache:{CACHE}:r:t:e:absent"]))
        assert values == [key.encode() for key in keys] + [None]
    finally:
        await tier.close()


async def test_every_startup_node_form_reaches_the_cluster(
        sidecar_factory: Any, redis_cluster: RedisClusterServer, client_for: Any) -> None:
    """All nodes listed, and a single node that is not the first primary."""
    last_only = f"redis+cluster://127.0.0.1:{redis_cluster.nodes[-1].port}"
    one = client_for(await sidecar_factory(redis_url=redis_cluster.all_nodes_url, cache_name=CACHE))
    two = client_for(await sidecar_factory(redis_url=last_only, cache_name=CACHE))
    assert (await chat(one, **body("Which node?"))).cache == MISS
    answer = await chat(two, **body("Which node?"))
    assert (answer.cache, answer.content) == (HIT, expected("Which node?"))


async def test_counters_add_up_in_one_hash_that_the_operator_reads(
        sidecar_factory: Any, redis_cluster: RedisClusterServer, client_for: Any) -> None:
    handles = [await sidecar_factory(redis_url=redis_cluster.url, cache_name=CACHE) for _ in range(2)]
    for handle in handles:
        api = client_for(handle)
        for question in ("one?", "two?", "one?"):
            await chat(api, **body(question))
    # 6 requests: the first sidecar misses twice and hits once, the second hits three times

    async def flushed() -> Any:
        status, report = await admin(handles[0], "GET", "/admin/stats")
        assert status == 200
        return report["fleet"] if report["fleet"] and report["fleet"]["requests"] == 6 else None

    fleet = await wait_until(flushed, timeout=15, what="both sidecars' counts in the shared hash")
    assert (fleet["requests"], fleet["hitsExact"], fleet["hitsSemantic"]) == (6, 4, 0)
    assert redis_cluster.cluster_client().hgetall(f"llmcache:{CACHE}:stats")[b"requests"] == b"6"
    operator_view = await read_stats(redis_cluster.url, None, f"llmcache:{CACHE}:stats", logging.getLogger("t"))
    assert operator_view is not None
    assert (operator_view["requests"], operator_view["hitsExact"], operator_view["hitRatio"]) == (6, 4, 0.6667)


async def test_a_revision_switch_reaches_the_sidecar_and_the_invalidation_empties_every_node(
        sidecar_factory: Any, redis_cluster: RedisClusterServer, client_for: Any, upstream: Any) -> None:
    handle = await following(sidecar_factory, redis_cluster.url, model_revision="rev-a")
    api = client_for(handle)
    questions = [f"Before the switch {i}?" for i in range(SPREAD)]
    for question in questions:
        assert (await chat(api, **body(question))).cache == MISS
    assert all(redis_cluster.keys_by_node(f"llmcache:{CACHE}:rev-a:*"))

    upstream.revision = "B"
    async with redis_client(redis_cluster.url) as client:  # what the operator's switch does
        assert await activate_revision(client, CACHE, "rev-b", "rev-a") == 1, "the sidecar heard it"
        await wait_until(lambda: handle.app[state.REVISION].active == "rev-b", what="the switch")
        assert await invalidate_redis(client, CACHE, revision="rev-a") == SPREAD
    assert redis_cluster.keys(f"llmcache:{CACHE}:rev-a:*") == []
    assert redis_cluster.cluster_client().get(f"llmcache:{CACHE}:active-revision") == b"rev-b"
    answer = await chat(api, **body(questions[0]))
    assert (answer.cache, answer.content) == (MISS, expected(questions[0], "B"))
    assert (await chat(api, **body(questions[0]))).cache == HIT
    assert len(redis_cluster.keys(f"llmcache:{CACHE}:rev-b:*")) == 1


async def test_a_sidecar_starting_later_reads_the_active_revision_from_the_cluster(
        sidecar_factory: Any, redis_cluster: RedisClusterServer) -> None:
    redis_cluster.cluster_client().set(f"llmcache:{CACHE}:active-revision", "rev-z")
    handle = await following(sidecar_factory, redis_cluster.url, model_revision="rev-a")
    assert handle.app[state.REVISION].active == "rev-z"


async def test_admin_invalidate_and_the_cli_delete_on_every_node(
        sidecar_factory: Any, redis_cluster: RedisClusterServer, client_for: Any) -> None:
    handle = await sidecar_factory(redis_url=redis_cluster.url, cache_name=CACHE, tenant_header="X-User")
    api = client_for(handle)
    for tenant in ("ann", "bob"):
        for i in range(SPREAD // 2):
            await chat(api, headers={"X-User": tenant}, **body(f"Tenant question {i}?"))
    assert len(redis_cluster.keys(f"llmcache:{CACHE}:*:e:*")) == SPREAD
    status, report = await admin(handle, "POST", "/admin/invalidate", {"tenant": "ann"})
    assert (status, report["exactEntries"]) == (200, SPREAD // 2)
    assert redis_cluster.keys(f"llmcache:{CACHE}:*:ann:e:*") == []
    assert len(redis_cluster.keys(f"llmcache:{CACHE}:*:bob:e:*")) == SPREAD // 2
    answer = await chat(api, headers={"X-User": "bob"}, **body("Tenant question 0?"))
    assert answer.cache == HIT
    status, report = await admin(handle, "GET", "/admin/stats")
    assert (status, report["entries"]["exact"]) == (200, SPREAD // 2)

    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCACHE_")}
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "llmcache_sidecar.tools", "invalidate", "--cache", CACHE, "--all",
                         "--redis-url", redis_cluster.url, "--json"],
        capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["exactEntries"] == SPREAD // 2
    assert redis_cluster.keys(f"llmcache:{CACHE}:*:e:*") == []


async def test_a_node_restart_is_passed_through_then_recovers(
        sidecar_factory: Any, redis_cluster: RedisClusterServer, client_for: Any, upstream: Any) -> None:
    handle = await following(sidecar_factory, redis_cluster.url, model_revision="rev-a")
    api = client_for(handle)
    assert (await chat(api, **body("Stored before the outage?"))).cache == MISS
    redis_cluster.stop(1)
    await asyncio.to_thread(redis_cluster.wait_down)
    # The cluster refuses every command (a primary without replica is gone): pass through.
    for i in range(5):
        answer = await chat(api, **body(f"During the outage {i}?"))
        assert answer.content == expected(f"During the outage {i}?")
        assert answer.cache in (BYPASS, MISS)
    assert metric_value(await metrics_text(handle), "llmcache_backend_errors_total", backend="redis") >= 1
    follower = handle.app[FOLLOWER]
    connections = follower.connections

    await asyncio.to_thread(redis_cluster.start, 1)
    asked = iter(range(10_000))

    async def stores_and_hits() -> bool:
        question = f"After the restart {next(asked)}?"
        first = await chat(api, **body(question))
        again = await chat(api, **body(question))
        assert first.content == again.content == expected(question)
        return (first.cache, again.cache) == (MISS, HIT)

    await wait_until(stores_and_hits, timeout=30, what="the exact tier back")
    status, report = await admin(handle, "GET", "/admin/stats")
    assert status == 200 and report["degraded"] == []
    # The revision events still arrive (the follower may or may not have been on the lost node).
    upstream.revision = "B"
    async with redis_client(redis_cluster.url) as client:
        await wait_until(lambda: _announce(client), timeout=30, what="a subscriber that hears the switch")
    await wait_until(lambda: handle.app[state.REVISION].active == "rev-b", what="the switch after the restart")
    assert follower.connections >= connections


async def _announce(client: Any) -> bool:
    return await activate_revision(client, CACHE, "rev-b", "rev-a") >= 1


@pytest.mark.parametrize("fixture", ["password_cluster", "tls_cluster"])
async def test_a_password_protected_cluster_takes_the_password_setting(
        sidecar_factory: Any, fixture: str, request: pytest.FixtureRequest, client_for: Any) -> None:
    """Over plain TCP and over TLS only (``rediss+cluster://``, the CA in the URL)."""
    password_cluster: RedisClusterServer = request.getfixturevalue(fixture)
    handle = await following(sidecar_factory, password_cluster.url, redis_password=PASSWORD, model_revision="rev-a")
    api = client_for(handle)
    assert (await chat(api, **body("Behind a password?"))).cache == MISS
    assert (await chat(api, **body("Behind a password?"))).cache == HIT
    async with redis_client(password_cluster.url, PASSWORD) as client:
        assert await activate_revision(client, CACHE, "rev-b", "rev-a") == 1, "the subscription authenticated"
    await wait_until(lambda: handle.app[state.REVISION].active == "rev-b", what="the switch")
    wrong = client_for(await sidecar_factory(redis_url=password_cluster.url, redis_password="wrong", cache_name=CACHE))
    answer = await chat(wrong, **body("Behind a password?"))
    assert (answer.cache, answer.content) == (BYPASS, expected("Behind a password?"))
