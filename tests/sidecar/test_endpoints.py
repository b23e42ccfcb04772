"""Embeddings, pass-through, bad requests, the admin API and the metrics, end to end."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import Any

import aiohttp
import openai
import pytest

from tests.sidecar.calls import HIT, MISS, base, chat, metric_value, user
from tests.upstream import TestUpstream, embedding_vector

BODY: dict[str, Any] = {"model": "test-model", "messages": user("count my tokens"), "temperature": 0}
CONTRACT_METRICS = ["llmcache_requests_total", "llmcache_lookup_seconds", "llmcache_upstream_seconds",
                    "llmcache_embedding_seconds", "llmcache_tokens_saved_total", "llmcache_entries",
                    "llmcache_invalidated_total", "llmcache_backend_errors_total"]


def api(handle: Any, path: str) -> str:
    return base(handle.api_url, "/v1") + path


def admin(handle: Any, path: str) -> str:
    return base(handle.metrics_url, "/metrics") + path


# ---- embeddings and pass-through


def _floats(embedding: Any) -> list[float]:
    """An embedding as floats (asked for as base64, the client hands back the string)."""
    if isinstance(embedding, str):
        raw = base64.b64decode(embedding)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return embedding


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_embeddings_are_cached(client: openai.AsyncOpenAI, upstream: TestUpstream, encoding: str) -> None:
    create = client.embeddings.with_raw_response.create
    first = await create(model="embed", input=["alpha", "beta"], encoding_format=encoding)
    second = await create(model="embed", input=["alpha", "beta"], encoding_format=encoding)
    assert (first.headers["x-llmcache"], second.headers["x-llmcache"]) == (MISS, HIT)
    assert upstream.calls["/v1/embeddings"] == 1
    vectors = [_floats(item.embedding) for item in second.parse().data]
    assert vectors[0] == pytest.approx(embedding_vector("embed", "alpha"), abs=1e-6)
    assert vectors[1] == pytest.approx(embedding_vector("embed", "beta"), abs=1e-6)
    other = await create(model="embed", input=["alpha"], encoding_format=encoding)
    assert other.headers["x-llmcache"] == MISS
    assert upstream.calls["/v1/embeddings"] == 2


async def test_other_paths_pass_through_uncached(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    for _ in range(2):
        models = await client.models.list()
        assert [m.id for m in models.data] == ["test-model"]
    assert upstream.calls["/v1/models"] == 2
    assert upstream.last("/v1/models").headers["Authorization"] == "Bearer test"
    with pytest.raises(openai.NotFoundError) as caught:
        await client.post("/moderations", body={"input": "x"}, cast_to=object)
    assert "no route POST /v1/moderations" in caught.value.body["message"]
    assert upstream.last("/v1/moderations").body == {"input": "x"}


async def test_request_headers_reach_the_upstream(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    await chat(client, headers={"X-Trace": "t-1"}, **BODY)
    seen = upstream.last("/v1/chat/completions")
    assert seen.headers["Authorization"] == "Bearer test"
    assert seen.headers["X-Trace"] == "t-1"
    assert seen.body == {**BODY, "stream": False}  # the client sends stream: false itself


# ---- bad requests


BAD_BODIES = {
    "malformed-json": b'{"model": "m", "messages": [',
    "not-an-object": b'["model", "messages"]',
    "missing-model": json.dumps({"messages": user("hi")}).encode(),
    "missing-messages": json.dumps({"model": "m"}).encode(),
    "messages-not-a-list": json.dumps({"model": "m", "messages": "hi"}).encode(),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_bad_request_is_a_400_with_an_openai_error(tier_sidecar: Any, http: aiohttp.ClientSession,
                                                         upstream: TestUpstream, case: str) -> None:
    async with http.post(api(tier_sidecar, "/v1/chat/completions"), data=BAD_BODIES[case],
                         headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400
        body = await response.json()
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["type"]
    assert sum(upstream.calls.values()) == 0


async def test_completions_without_prompt_is_a_400(tier_sidecar: Any, http: aiohttp.ClientSession, upstream: TestUpstream) -> None:
    async with http.post(api(tier_sidecar, "/v1/completions"), json={"model": "m"}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["message"]
    assert sum(upstream.calls.values()) == 0


async def test_bad_request_through_the_openai_client(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="test-model", messages="not a list")  # type: ignore[arg-type]
    assert caught.value.status_code == 400


async def test_oversized_body_is_a_413(sidecar_factory: Any, http: aiohttp.ClientSession, upstream: TestUpstream) -> None:
    handle = await sidecar_factory(max_body_bytes=2048)
    small = {"model": "m", "messages": user("x" * 100)}
    big = {"model": "m", "messages": user("x" * 5000)}
    async with http.post(api(handle, "/v1/chat/completions"), json=big) as response:
        assert response.status == 413
        assert (await response.json())["error"]["message"]
    async with http.post(api(handle, "/v1/chat/completions"), json=small) as response:
        assert response.status == 200
    assert upstream.calls["/v1/chat/completions"] == 1


# ---- health, metrics, admin


async def test_health_endpoints(sidecar: Any, http: aiohttp.ClientSession) -> None:
    for path in ("/healthz", "/readyz"):
        async with http.get(admin(sidecar, path)) as response:
            assert response.status == 200


async def test_metrics_expose_the_contract_names(sidecar: Any, openai_client: openai.AsyncOpenAI,
                                                 http: aiohttp.ClientSession) -> None:
    first = await chat(openai_client, **BODY)
    await chat(openai_client, **BODY)
    await chat(openai_client, **{**BODY, "temperature": 1.5})
    async with http.get(admin(sidecar, "/metrics")) as response:
        assert response.status == 200
        text = await response.text()
    for name in CONTRACT_METRICS:
        assert name in text, f"{name} missing from /metrics"
    assert metric_value(text, "llmcache_requests_total", result="hit-exact") == 1
    assert metric_value(text, "llmcache_requests_total", result="miss") == 1
    assert metric_value(text, "llmcache_requests_total", result="bypass") == 1
    assert metric_value(text, "llmcache_tokens_saved_total") == first.usage["total_tokens"]
    assert metric_value(text, "llmcache_lookup_seconds_count", tier="exact") >= 2
    assert metric_value(text, "llmcache_upstream_seconds_count") >= 2


async def test_metrics_are_not_on_the_api_port(sidecar: Any, http: aiohttp.ClientSession) -> None:
    async with http.get(api(sidecar, "/metrics")) as response:
        assert response.status == 404


async def _stored_then_hit(client: openai.AsyncOpenAI, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    await chat(client, headers=headers, **body)
    assert (await chat(client, headers=headers, **body)).cache == HIT


async def test_admin_with_a_token(sidecar_factory: Any, client_for: Any, redis_server: Any,
                                  http: aiohttp.ClientSession, upstream: TestUpstream) -> None:
    handle = await sidecar_factory(redis_url=redis_server.url, admin_token="s3cret", tenant_header="X-User")
    client = client_for(handle)
    good = {"Authorization": "Bearer s3cret"}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        async with http.get(admin(handle, "/admin/stats"), headers=headers) as response:
            assert response.status in (401, 403)
        async with http.post(admin(handle, "/admin/invalidate"), json={"all": True}, headers=headers) as response:
            assert response.status in (401, 403)

    await _stored_then_hit(client, BODY, {"X-User": "alice"})
    await _stored_then_hit(client, BODY, {"X-User": "bob"})
    async with http.get(admin(handle, "/admin/stats"), headers=good) as response:
        assert response.status == 200
        stats = await response.json()
    assert stats["requests"]["requests"] == 4 and stats["requests"]["hitsExact"] == 2
    assert stats["requests"]["hitRatio"] == 0.5
    assert stats["entries"]["exact"] == 2

    async with http.post(admin(handle, "/admin/invalidate"), json={"tenant": "alice"}, headers=good) as response:
        assert response.status == 200
        assert (await response.json())["exactEntries"] == 1
    assert len([k for k in redis_server.scan() if ":e:" in k]) == 1
    assert (await chat(client, headers={"X-User": "alice"}, **BODY)).cache == MISS
    assert (await chat(client, headers={"X-User": "bob"}, **BODY)).cache == HIT

    async with http.post(admin(handle, "/admin/invalidate"), json={"all": True}, headers=good) as response:
        assert response.status == 200
        assert (await response.json())["exactEntries"] == 2
    assert not [k for k in redis_server.scan() if ":e:" in k]
    assert (await chat(client, headers={"X-User": "bob"}, **BODY)).cache == MISS
    async with http.get(admin(handle, "/metrics")) as response:
        text = await response.text()
    assert metric_value(text, "llmcache_invalidated_total", tier="exact") == 3
    assert metric_value(text, "llmcache_entries", tier="exact") == 1


@pytest.mark.parametrize("tier", ["redis", "memory"])
async def test_admin_invalidate_by_revision(sidecar_factory: Any, client_for: Any, http: aiohttp.ClientSession,
                                            request: pytest.FixtureRequest, tier: str) -> None:
    redis_url = request.getfixturevalue("redis_server").url if tier == "redis" else None
    handle = await sidecar_factory(redis_url=redis_url, model_revision="r1")
    client = client_for(handle)
    await _stored_then_hit(client, BODY)
    async with http.post(admin(handle, "/admin/invalidate"), json={"revision": "r0"}) as response:
        assert response.status == 200
    assert (await chat(client, **BODY)).cache == HIT, "another revision's invalidation leaves r1 alone"
    async with http.post(admin(handle, "/admin/invalidate"), json={"revision": "r1"}) as response:
        assert response.status == 200
    assert (await chat(client, **BODY)).cache == MISS


@pytest.mark.parametrize("tier", ["redis", "memory"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_answer_asked_for_before_an_invalidation_is_not_cached(
        sidecar_factory: Any, client_for: Any, http: aiohttp.ClientSession, upstream: TestUpstream,
        request: pytest.FixtureRequest, tier: str, stream: bool) -> None:
    """The tenant is wiped while its miss waits for the upstream: the answer reaches the client
    but is not kept (it may be what the wipe was for), so the next ask goes upstream again."""
    redis_url = request.getfixturevalue("redis_server").url if tier == "redis" else None
    handle = await sidecar_factory(redis_url=redis_url)
    client = client_for(handle)
    body = {**BODY, "messages": user(f"asked before the wipe {stream}"), "stream": stream}
    upstream.delay = 0.5
    asking = asyncio.create_task(chat(client, **body))
    await asyncio.sleep(0.2)
    async with http.post(admin(handle, "/admin/invalidate"), json={"all": True}) as response:
        assert response.status == 200
    first = await asking
    assert first.cache == MISS and first.content
    upstream.delay = 0.0
    assert (await chat(client, **body)).cache == MISS, "the answer asked for before the wipe was kept"
    assert (await chat(client, **body)).cache == HIT, "answers asked for after it are cached as usual"
    assert upstream.calls["/v1/chat/completions"] == 2


@pytest.mark.parametrize("payload", [b"{", b"[]", b'{"nothing": 1}', b'{"revision": 5}'])
async def test_admin_invalidate_rejects_bad_bodies(sidecar: Any, http: aiohttp.ClientSession, payload: bytes) -> None:
    async with http.post(admin(sidecar, "/admin/invalidate"), data=payload,
                         headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["message"]



def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (None if it has none)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.254", 9))  # no packet is sent: this only picks the outgoing address
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_admin_without_a_token_answers_loopback_only(sidecar_factory: Any, http: aiohttp.ClientSession) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to call from")
    handle = await sidecar_factory(metrics_listen="0.0.0.0:0")
    port = handle.metrics_url.rsplit(":", 1)[1]
    async with http.get(f"http://127.0.0.1:{port}/admin/stats") as response:
        assert response.status == 200
    async with http.get(f"http://{address}:{port}/admin/stats") as response:
        assert response.status == 403
        assert (await response.json())["error"]["message"]
    async with http.post(f"http://{address}:{port}/admin/invalidate", json={"all": True}) as response:
        assert response.status == 403
    async with http.get(f"http://{address}:{port}/metrics") as response:
        assert response.status == 200, "metrics stay open to scrapers"
