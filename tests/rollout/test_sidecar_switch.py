"""The sidecar's side of a switch, in process: where it learns the active revision (the Redis key,
else the mounted file), reconnection after Redis restarts, recycled upstream connections, and the
old revision's entries dropped from its vector index."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from llmcache_sidecar import state
from llmcache_sidecar.events import FOLLOWER
from llmcache_sidecar.invalidation import RevisionActivated, activate_revision, redis_client
from tests.rollout.conftest import wait_until
from tests.semantic import conftest as semantic_fixtures
from tests.sidecar.calls import MISS, chat, user

semantic_sidecar_factory = semantic_fixtures.semantic_sidecar_factory
cache_name = semantic_fixtures.cache_name
milvus_lite_path = semantic_fixtures.milvus_lite_path

CACHE = "sw"


def write_config(path: Path, revision: str) -> None:
    """What kubelet does when it refreshes the mounted ConfigMap (the sidecar reads only this key)."""
    path.write_text(f"model_revision: {revision}\n")


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.yaml"
    write_config(path, "rev-a")
    monkeypatch.setenv("LLMCACHE_CONFIG", str(path))
    return path


async def following(sidecar_factory: Any, redis_server: Any, **settings: Any) -> Any:
    handle = await sidecar_factory(redis_url=redis_server.url, cache_name=CACHE, model_revision="rev-a", **settings)
    await asyncio.wait_for(handle.app[FOLLOWER].synced.wait(), 10)
    return handle


def cut_subscriptions(redis_server: Any) -> None:
    client = redis_server.client()
    for connection in client.client_list():
        if connection["name"].startswith("llmcache-events-"):
            client.execute_command("CLIENT", "KILL", "ID", connection["id"])


def revision(handle: Any) -> str:
    return handle.app[state.REVISION].active


async def test_on_reconnect_the_key_wins_and_the_file_counts_only_without_it(
        sidecar_factory: Any, redis_server: Any, config_file: Path) -> None:
    handle = await following(sidecar_factory, redis_server)
    follower = handle.app[FOLLOWER]
    # A switch this sidecar did not hear of, with the file not yet refreshed: the key tells.
    redis_server.client().set(f"llmcache:{CACHE}:active-revision", "rev-b")
    cut_subscriptions(redis_server)
    await wait_until(lambda: revision(handle) == "rev-b", what="caught up from the key")
    assert follower.connections >= 2
    # Redis lost the key (restarted without persistence): the refreshed file tells.
    redis_server.client().delete(f"llmcache:{CACHE}:active-revision")
    write_config(config_file, "rev-c")
    cut_subscriptions(redis_server)
    await wait_until(lambda: revision(handle) == "rev-c", what="caught up from the file")


async def test_redis_restarting_is_survived_with_back_off(
        sidecar_factory: Any, redis_server: Any, config_file: Path) -> None:
    handle = await following(sidecar_factory, redis_server)
    follower = handle.app[FOLLOWER]
    redis_server.stop()
    await asyncio.sleep(1.0)  # a few failed reconnections
    redis_server.start()
    await wait_until(lambda: follower.connections >= 2, what="reconnected")
    async with redis_client(redis_server.url) as client:
        assert await activate_revision(client, CACHE, "rev-b", "rev-a") == 1
    await wait_until(lambda: revision(handle) == "rev-b", what="the event after the restart")


async def test_a_switch_recycles_the_upstream_connections(
        sidecar_factory: Any, redis_server: Any, config_file: Path, client_for: Any) -> None:
    handle = await following(sidecar_factory, redis_server)
    pool = handle.app[state.UPSTREAM]
    before = pool.session
    api = client_for(handle)
    assert (await chat(api, model="test-model", messages=user("keep-alive?"), temperature=0)).cache == MISS
    async with redis_client(redis_server.url) as client:
        await client.publish(f"llmcache:{CACHE}:events", RevisionActivated(CACHE, "rev-b", "rev-a").encode())
    await wait_until(lambda: revision(handle) == "rev-b", what="the switch")
    assert pool.session is not before, "new requests get new connections (to the new pods)"
    assert not before.closed, "requests still running on the old connections may finish"
    again = await chat(api, model="test-model", messages=user("keep-alive?"), temperature=0)
    assert again.cache == MISS  # under rev-b: nothing stored yet


async def test_events_of_other_caches_and_garbage_are_ignored(
        sidecar_factory: Any, redis_server: Any, config_file: Path) -> None:
    handle = await following(sidecar_factory, redis_server)
    async with redis_client(redis_server.url) as client:
        channel = f"llmcache:{CACHE}:events"
        await client.publish(channel, RevisionActivated("other", "rev-x", "rev-a").encode())
        await client.publish(channel, b"not json")
        await client.publish(channel, '{"event": "revision-activated", "cache": "sw", "revision": "a b"}')
        await client.publish(channel, RevisionActivated(CACHE, "rev-b", "rev-a").encode())
    await wait_until(lambda: revision(handle) == "rev-b", what="the one valid event")


async def test_the_old_revisions_vector_entries_are_dropped(
        semantic_sidecar_factory: Any, redis_server: Any, cache_name: str, client_for: Any,
        config_file: Path) -> None:
    handle = await semantic_sidecar_factory(model_revision="rev-a")
    await asyncio.wait_for(handle.app[FOLLOWER].synced.wait(), 10)
    tier = handle.app[state.SEMANTIC_TIER]
    api = client_for(handle)
    assert (await chat(api, model="test-model", messages=user("How do I reset my password?"),
                       temperature=0)).cache == MISS
    assert await tier.count() == 1
    async with redis_client(redis_server.url) as client:
        await client.publish(f"llmcache:{cache_name}:events", RevisionActivated(cache_name, "rev-b", "rev-a").encode())
    await wait_until(lambda: revision(handle) == "rev-b", what="the switch")
    assert await tier.count() == 0



async def test_a_sidecar_that_caught_up_late_deletes_what_it_stored_under_the_old_revision(
        sidecar_factory: Any, redis_server: Any, config_file: Path, client_for: Any) -> None:
    handle = await following(sidecar_factory, redis_server)
    admin = redis_server.client()
    # Its subscription is cut and cannot come back (SUBSCRIBE refused) while the switch happens.
    admin.execute_command("ACL", "SETUSER", "default", "-subscribe")
    try:
        cut_subscriptions(redis_server)
        api = client_for(handle)
        assert (await chat(api, model="test-model", messages=user("stored too late"), temperature=0)).cache == MISS
        assert len(redis_server.scan(f"llmcache:{CACHE}:rev-a:*")) == 1
        async with redis_client(redis_server.url) as client:
            assert await activate_revision(client, CACHE, "rev-b", "rev-a") == 0, "nobody heard it"
        assert revision(handle) == "rev-a"
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+subscribe")
    await wait_until(lambda: revision(handle) == "rev-b", what="caught up")
    await wait_until(lambda: not redis_server.scan(f"llmcache:{CACHE}:rev-a:*"), what="the late entry deleted")
