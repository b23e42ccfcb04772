"""Sidecar behaviour beyond the client's view: revision capture, shared stats, back-off, admin
access, the usage chunk asked for on the client's behalf."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from llmcache_sidecar import state
from tests.upstream import TestUpstream

BODY = {"model": "test-model", "messages": [{"role": "user", "content": "what is a cache?"}], "temperature": 0}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def chat(http: aiohttp.ClientSession, handle: Any, body: dict[str, Any] | None = None,
               **headers: str) -> tuple[str, bytes]:
    async with http.post(handle.api_url + "/v1/chat/completions", json=body or BODY, headers=headers) as response:
        assert response.status == 200, await response.text()
        return response.headers["X-LLMCache"], await response.read()


def entry_keys(redis_server: Any) -> list[str]:
    return redis_server.scan("llmcache:*:e:*")


async def test_answer_of_a_request_started_under_an_old_revision_is_not_stored(
        sidecar_factory: Any, redis_server: Any, upstream: TestUpstream, http: aiohttp.ClientSession) -> None:
    handle = await sidecar_factory(redis_url=redis_server.url, model_revision="r1")
    upstream.stall = True
    pending = asyncio.create_task(chat(http, handle))
    while not upstream.calls["/v1/chat/completions"]:
        await asyncio.sleep(0.01)
    assert handle.app[state.REVISION].switch("r2")
    upstream.release()
    assert (await pending)[0] == "miss"
    assert entry_keys(redis_server) == []
    assert (await chat(http, handle))[0] == "miss"
    [key] = entry_keys(redis_server)
    assert key.startswith("llmcache:default:r2::e:")
    assert (await chat(http, handle))[0] == "hit-exact"


async def test_counts_reach_the_shared_stats_hash(sidecar_factory: Any, redis_server: Any,
                                                  http: aiohttp.ClientSession) -> None:
    handle = await sidecar_factory(redis_url=redis_server.url, cache_name="fleet")
    assert [(await chat(http, handle))[0] for _ in range(3)] == ["miss", "hit-exact", "hit-exact"]
    client = redis_server.client()
    for _ in range(100):
        stats = {k.decode(): int(v) for k, v in client.hgetall("llmcache:fleet:stats").items()}
        if stats.get("requests") == 3:
            break
        await asyncio.sleep(0.05)
    assert stats["requests"] == 3 and stats["hitsExact"] == 2 and stats.get("hitsSemantic", 0) == 0
    assert stats["tokensSaved"] > 0 and stats["tokensSaved"] % 2 == 0
    async with http.get(handle.metrics_url + "/admin/stats") as response:
        fleet = (await response.json())["fleet"]
    assert fleet["requests"] == 3 and fleet["hitRatio"] == pytest.approx(2 / 3)


async def test_streamed_miss_asks_for_usage_but_hides_it_from_a_client_that_did_not(
        sidecar: Any, upstream: TestUpstream, http: aiohttp.ClientSession) -> None:
    result, streamed = await chat(http, sidecar, {**BODY, "stream": True})
    assert result == "miss"
    assert upstream.last("/v1/chat/completions").body["stream_options"] == {"include_usage": True}
    events = [line for line in streamed.split(b"\n") if line.startswith(b"data: {")]
    assert all(orjson.loads(line[6:]).get("usage") is None for line in events)
    result, cached = await chat(http, sidecar)
    assert result == "hit-exact"
    assert orjson.loads(cached)["usage"]["total_tokens"] > 0


async def test_redis_outage_backs_off_instead_of_trying_every_request(
        sidecar: Any, redis_server: Any, http: aiohttp.ClientSession) -> None:
    redis_server.stop()
    results = [(await chat(http, sidecar))[0] for _ in range(20)]
    assert set(results) == {"bypass"}
    errors = sidecar.app[state.EXACT_HEALTH].errors
    assert 1 <= errors < 20
    async with http.get(sidecar.metrics_url + "/metrics") as response:
        text = await response.text()
    assert f'llmcache_backend_errors_total{{backend="redis"}} {float(errors)}' in text.splitlines()
    async with http.get(sidecar.metrics_url + "/readyz") as response:
        assert response.status == 200


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_admin_without_token_answers_loopback_only(sidecar_factory: Any, redis_server: Any,
                                                         http: aiohttp.ClientSession) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback address on this machine")
    handle = await sidecar_factory(redis_url=redis_server.url, metrics_listen="0.0.0.0:0")
    port = handle.metrics_url.rsplit(":", 1)[1]
    async with http.get(f"http://127.0.0.1:{port}/admin/stats") as response:
        assert response.status == 200
    async with http.get(f"http://{address}:{port}/admin/stats") as response:
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "admin_loopback_only"
    async with http.post(f"http://{address}:{port}/admin/invalidate", json={"all": True}) as response:
        assert response.status == 403
    async with http.get(f"http://{address}:{port}/metrics") as response:
        assert response.status == 200


@pytest.mark.parametrize(("authorization", "status"), [
    (None, 401), ("Bearer wrong", 401), ("Basic s3cret", 401), ("Bearer s3cret", 200), ("bearer s3cret", 200),
])
async def test_admin_token(sidecar_factory: Any, redis_server: Any, http: aiohttp.ClientSession,
                           authorization: str | None, status: int) -> None:
    handle = await sidecar_factory(redis_url=redis_server.url, admin_token="s3cret")
    await chat(http, handle)
    headers = {"Authorization": authorization} if authorization else {}
    async with http.post(handle.metrics_url + "/admin/invalidate", json={"all": True}, headers=headers) as response:
        assert response.status == status
        if status == 200:
            assert (await response.json())["exactEntries"] == 1
    assert len(entry_keys(redis_server)) == (0 if status == 200 else 1)


async def test_admin_stats_and_invalidate_by_tenant(sidecar_factory: Any, redis_server: Any,
                                                    http: aiohttp.ClientSession) -> None:
    handle = await sidecar_factory(redis_url=redis_server.url, tenant_header="X-Tenant")
    for tenant in ("alice", "bob"):
        assert (await chat(http, handle, **{"X-Tenant": tenant}))[0] == "miss"
    async with http.post(handle.metrics_url + "/admin/invalidate", json={"tenant": "alice"}) as response:
        assert (await response.json()) == {"tenant": "alice", "exactEntries": 1, "semanticEntries": 0}
    assert (await chat(http, handle, **{"X-Tenant": "alice"}))[0] == "miss"
    assert (await chat(http, handle, **{"X-Tenant": "bob"}))[0] == "hit-exact"
    async with http.get(handle.metrics_url + "/admin/stats") as response:
        stats = await response.json()
    assert stats["entries"] == {"exact": 2}
    assert stats["requests"]["requests"] == 4 and stats["requests"]["hitsExact"] == 1
    assert stats["degraded"] == [] and stats["exactTier"] == "redis"
    assert stats["fleet"] is not None and set(stats["fleet"]) == set(stats["requests"])


async def test_pass_through_keeps_methods_status_and_body(sidecar: Any, upstream: TestUpstream,
                                                          http: aiohttp.ClientSession) -> None:
    async with http.get(sidecar.api_url + "/v1/models") as response:
        assert response.status == 200 and "X-LLMCache" not in response.headers
        assert (await response.json())["data"][0]["id"] == "test-model"
    async with http.get(sidecar.api_url + "/v1/chat/completions") as response:
        assert "X-LLMCache" not in response.headers  # only POST is cached; the rest is the upstream's
        assert response.status == 404 and "no route" in (await response.json())["error"]["message"]
    assert upstream.last("/v1/chat/completions").method == "GET"
    async with http.get(sidecar.api_url + "/elsewhere") as response:
        assert response.status == 404



def _sse(*payloads: Any) -> bytes:
    return b"".join(b"data: " + (p if isinstance(p, bytes) else orjson.dumps(p)) + b"\n\n" for p in payloads)


_CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
          "choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial"}, "finish_reason": None}]}


_FINISH = {**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


@contextlib.asynccontextmanager
async def scripted_upstream(answer: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """A one-route upstream for answers the test upstream cannot give; yields its URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_an_upstream_without_stream_options_still_streams_and_is_cached(
        sidecar_factory: Any, http: aiohttp.ClientSession) -> None:
    seen: list[dict[str, Any]] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append(body)
        if "stream_options" in body:
            return web.json_response({"error": {"message": "unknown field stream_options"}}, status=400)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_sse(_CHUNK, _FINISH, b"[DONE]"))
        return response

    async with scripted_upstream(answer) as url:
        handle = await sidecar_factory(upstream_url=url)
        result, first = await chat(http, handle, {**BODY, "stream": True})
        assert result == "miss" and b"partial" in first
        assert ["stream_options" in body for body in seen] == [True, False]
        result, second = await chat(http, handle, {**BODY, "stream": True})
        assert result == "hit-exact" and b"partial" in second and len(seen) == 2


@pytest.mark.parametrize(("stream", "second"), [
    # vLLM's way of failing mid-stream: an error event, then [DONE]
    (_sse(_CHUNK, {"error": {"message": "boom", "type": "InternalServerError", "code": 500}}, b"[DONE]"), "miss"),
    # [DONE] without a finish_reason: not a whole answer
    (_sse(_CHUNK, b"[DONE]"), "miss"),
    # the control: a whole answer is stored
    (_sse(_CHUNK, _FINISH, b"[DONE]"), "hit-exact"),
])
async def test_a_stream_that_ends_with_done_but_failed_is_not_stored(
        sidecar_factory: Any, http: aiohttp.ClientSession, stream: bytes, second: str) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(stream)
        return response

    async with scripted_upstream(answer) as url:
        handle = await sidecar_factory(upstream_url=url)
        result, body = await chat(http, handle, {**BODY, "stream": True})
        assert result == "miss" and body == stream  # forwarded as it came
        result, body = await chat(http, handle, {**BODY, "stream": True})
        assert result == second and b"partial" in body


async def test_exact_lookups_off_still_store_answers(sidecar_factory: Any, redis_server: Any,
                                                     http: aiohttp.ClientSession) -> None:
    """exact_enabled=False only skips exact lookups: the semantic tier reads answers from there."""
    handle = await sidecar_factory(redis_url=redis_server.url, exact_enabled=False)
    assert [(await chat(http, handle))[0] for _ in range(2)] == ["miss", "miss"]
    assert len(entry_keys(redis_server)) == 1


async def test_no_cache_while_redis_is_down_is_a_bypass(sidecar: Any, redis_server: Any,
                                                        http: aiohttp.ClientSession) -> None:
    redis_server.stop()
    assert (await chat(http, sidecar))[0] == "bypass"
    assert (await chat(http, sidecar, **{"Cache-Control": "no-cache"}))[0] == "bypass"
