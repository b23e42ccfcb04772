"""vLLM's prefix cache leaks across users through timing; vLLM's fix is the ``cache_salt`` request
field.  With a tenant, the sidecar sends the tenant's salt upstream (misses and pass-throughs of
chat and completions), keeps a salt the client sent, and the cache key stays what it was."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llmcache_sidecar.config import Settings
from llmcache_sidecar.keys import KeyBuilder
from tests.sidecar.calls import BYPASS, HIT, MISS, chat, complete, user
from tests.upstream import TestUpstream

CHAT = "/v1/chat/completions"
BODY: dict[str, Any] = {"model": "test-model", "messages": user("What is in my account?"), "temperature": 0}
ALICE, BOB = {"X-User": "alice"}, {"X-User": "bob"}


def salt_seen(upstream: TestUpstream, path: str = CHAT) -> str | None:
    return upstream.last(path).body.get("cache_salt")


@pytest.fixture
async def handle(sidecar_factory: Any, redis_server: Any) -> Any:
    return await sidecar_factory(redis_url=redis_server.url, tenant_header="X-User", admin_token="s3cret",
                                 cache_name="shop")


@pytest.fixture
def client(handle: Any, client_for: Any) -> Any:
    return client_for(handle)


@pytest.mark.parametrize("stream", [False, True])
async def test_each_tenant_gets_its_own_salt(client: Any, upstream: TestUpstream, stream: bool) -> None:
    assert (await chat(client, headers=ALICE, stream=stream, **BODY)).cache == MISS
    alice = salt_seen(upstream)
    assert (await chat(client, headers=BOB, stream=stream, **BODY)).cache == MISS
    bob = salt_seen(upstream)
    assert (await chat(client, headers=ALICE, stream=stream, **{**BODY, "seed": 1})).cache == MISS
    assert salt_seen(upstream) == alice, "a tenant's salt is stable, so its own prefixes stay cached"
    assert alice and bob and alice != bob
    assert "alice" not in alice and len(alice) == 64, "a digest, not the tenant id"


async def test_no_tenant_no_salt(client: Any, upstream: TestUpstream) -> None:
    await chat(client, **BODY)
    assert "cache_salt" not in upstream.last(CHAT).body


async def test_pass_throughs_and_completions_are_salted_embeddings_not(client: Any, upstream: TestUpstream) -> None:
    assert (await chat(client, headers=ALICE, **{**BODY, "temperature": 1.5})).cache == BYPASS
    alice = salt_seen(upstream)
    assert alice is not None
    await complete(client, headers=ALICE, model="test-model", prompt="Once upon", temperature=0)
    assert salt_seen(upstream, "/v1/completions") == alice
    await client.embeddings.create(model="test-model", input="hi", extra_headers=ALICE)
    assert "cache_salt" not in upstream.last("/v1/embeddings").body


async def test_a_client_salt_is_kept(client: Any, upstream: TestUpstream) -> None:
    await chat(client, headers=ALICE, extra_body={"cache_salt": "mine"}, **BODY)
    assert salt_seen(upstream) == "mine"
    assert list(upstream.last(CHAT).body).count("cache_salt") == 1


async def test_the_salt_does_not_change_the_key(handle: Any, client: Any, upstream: TestUpstream,
                                                redis_server: Any) -> None:
    await chat(client, headers=ALICE, **BODY)
    assert (await chat(client, headers=ALICE, **BODY)).cache == HIT
    keys = KeyBuilder(Settings(upstream_url="http://up", tenant_header="X-User", cache_name="shop"))
    expected = keys.parse("chat", orjson.dumps(BODY), CHAT, ALICE, "default", semantic=False).cache
    assert expected is not None
    assert [k for k in redis_server.scan("llmcache:*") if ":e:" in k] == [expected.exact_key]
    assert upstream.calls[CHAT] == 1


async def test_salt_depends_on_the_cache_and_the_secret(sidecar_factory: Any, client_for: Any, handle: Any,
                                                        client: Any, upstream: TestUpstream) -> None:
    await chat(client, headers=ALICE, **BODY)
    reference = salt_seen(upstream)
    salts = []
    for settings in ({"cache_name": "shop", "admin_token": "s3cret"},  # another replica: the same salt
                     {"cache_name": "other", "admin_token": "s3cret"},
                     {"cache_name": "shop", "admin_token": "another"}):
        replica = client_for(await sidecar_factory(tenant_header="X-User", **settings))
        await chat(replica, headers=ALICE, **{**BODY, "seed": len(salts)})
        salts.append(salt_seen(upstream))
    assert salts[0] == reference
    assert len({reference, *salts[1:]}) == 3


async def test_an_upstream_that_refuses_the_salt_still_answers(client: Any, upstream: TestUpstream) -> None:
    upstream.fail_status, upstream.fail_times = 400, 1  # e.g. not vLLM: "unknown field cache_salt"
    answer = await chat(client, headers=ALICE, **BODY)
    assert answer.cache == MISS and answer.content
    assert [r.body.get("cache_salt") is not None for r in upstream.requests] == [True, False]
