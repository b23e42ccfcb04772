"""Per-tenant isolation: two tenants never share an entry."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.sidecar.calls import HIT, MISS, chat, user
from tests.upstream import TestUpstream, expected_chat

BODY: dict[str, Any] = {"model": "test-model", "messages": user("Tell me a secret"), "temperature": 0}
CHAT = "/v1/chat/completions"


@pytest.fixture(params=["redis", "memory"])
async def tenant_client(request: pytest.FixtureRequest, sidecar_factory: Any, client_for: Any) -> Any:
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    return client_for(await sidecar_factory(redis_url=redis_url, tenant_header="X-User"))


async def test_two_tenants_never_share_an_entry(tenant_client: Any, upstream: TestUpstream) -> None:
    alice, bob = {"X-User": "alice"}, {"X-User": "bob"}
    assert (await chat(tenant_client, headers=alice, **BODY)).cache == MISS
    upstream.revision = "B"  # bob's answer differs: a shared entry would show alice's
    for_bob = await chat(tenant_client, headers=bob, **BODY)
    assert for_bob.cache == MISS
    assert for_bob.content == expected_chat(BODY, revision="B")[0]
    anonymous = await chat(tenant_client, **BODY)
    assert anonymous.cache == MISS, "no tenant is a tenant of its own, not a wildcard"
    assert upstream.calls[CHAT] == 3

    again_alice = await chat(tenant_client, headers=alice, **BODY)
    again_bob = await chat(tenant_client, headers=bob, **BODY)
    assert (again_alice.cache, again_bob.cache) == (HIT, HIT)
    assert again_alice.content == expected_chat(BODY, revision="A")[0]
    assert again_bob.content == expected_chat(BODY, revision="B")[0]
    assert upstream.calls[CHAT] == 3


async def test_redis_keys_follow_the_contract(sidecar_factory: Any, client_for: Any, redis_server: Any) -> None:
    client = client_for(await sidecar_factory(redis_url=redis_server.url, tenant_header="X-User",
                                              cache_name="shop", model_revision="r7"))
    await chat(client, headers={"X-User": "alice"}, **BODY)
    await chat(client, **BODY)
    entries = [k for k in redis_server.scan("llmcache:*") if ":e:" in k]
    assert len(entries) == 2
    assert all(re.fullmatch(r"llmcache:shop:r7:(alice|):e:[0-9a-f]{64}", key) for key in entries), entries
    assert {key.split(":")[3] for key in entries} == {"alice", ""}


async def test_tenant_header_ignored_when_not_configured(client: Any, upstream: TestUpstream) -> None:
    await chat(client, headers={"X-LLMCache-Tenant": "alice"}, **BODY)
    assert (await chat(client, headers={"X-LLMCache-Tenant": "bob"}, **BODY)).cache == HIT
    assert upstream.calls[CHAT] == 1


async def test_invalid_tenant_id_is_a_400(tenant_client: Any, upstream: TestUpstream) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        await chat(tenant_client, headers={"X-User": "a:b"}, **BODY)  # ':' would split the key
    assert caught.value.body["message"]
    assert upstream.calls[CHAT] == 0
