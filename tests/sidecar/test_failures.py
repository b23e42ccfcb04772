"""Failure behaviour: upstream errors pass through and are never stored; Redis trouble never
breaks a call, and the tier recovers by itself."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from tests.sidecar.calls import BYPASS, HIT, MISS, base, chat, metric_value, user
from tests.upstream import TestUpstream, expected_chat

CHAT = "/v1/chat/completions"
BODY: dict[str, Any] = {"model": "test-model", "messages": user("Is this cached?"), "temperature": 0}


async def _drain(client: openai.AsyncOpenAI) -> tuple[str, str | None, BaseException | None]:
    """Stream BODY; return (text received, last finish_reason, the error raised if any)."""
    text, finish = "", None
    try:
        stream = await client.chat.completions.create(stream=True, **BODY)
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
    except (openai.APIError, aiohttp.ClientError) as exc:  # the client sees the cut
        return text, finish, exc
    return text, finish, None


async def test_cut_stream_is_not_stored(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    upstream.cut_after = 4
    text, finish, error = await _drain(client)
    assert error is not None or finish is None, "the client must see that the stream was cut"
    assert text != expected_chat(BODY)[0]
    upstream.cut_after = None
    after = await chat(client, **BODY)
    assert after.cache == MISS, "a cut stream must not be stored"
    assert after.content == expected_chat(BODY)[0]
    assert upstream.calls[CHAT] == 2
    assert (await chat(client, stream=True, **BODY)).cache == HIT


async def test_cut_json_body_is_an_error_and_not_stored(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    upstream.cut_after = 0
    with pytest.raises((openai.APIStatusError, openai.APIConnectionError)):
        await chat(client, **BODY)
    upstream.cut_after = None
    assert (await chat(client, **BODY)).cache == MISS


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("status", [500, 429, 400])
async def test_upstream_error_is_returned_as_is_and_not_stored(client: openai.AsyncOpenAI, upstream: TestUpstream,
                                                               status: int, stream: bool) -> None:
    upstream.fail_status, upstream.fail_times = status, 1
    with pytest.raises(openai.APIStatusError) as caught:
        await chat(client, stream=stream, **BODY)
    assert caught.value.status_code == status
    assert caught.value.body["message"] == f"test upstream told to fail with {status}"
    after = await chat(client, stream=stream, **BODY)
    assert after.cache == MISS
    assert after.content == expected_chat(BODY)[0]
    assert (await chat(client, **BODY)).cache == HIT
    assert upstream.calls[CHAT] == 2


async def test_unreachable_upstream_gives_an_openai_error(sidecar_factory: Any, client_for: Any, redis_server: Any) -> None:
    from tests.conftest import free_port

    handle = await sidecar_factory(redis_url=redis_server.url, upstream_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(openai.APIStatusError) as caught:
        await chat(client_for(handle), **BODY)
    assert caught.value.status_code in (502, 503, 504)
    assert isinstance(caught.value.body, dict) and caught.value.body.get("message")
    assert not [k for k in redis_server.scan() if ":e:" in k]


async def _until_hit(client: openai.AsyncOpenAI, attempts: int = 50) -> list[str | None]:
    """Call BODY until it is a hit again (the tier recovers by itself); the results seen."""
    results = []
    for _ in range(attempts):
        results.append((await chat(client, **BODY)).cache)
        if results[-1] == HIT:
            return results
        await asyncio.sleep(0.2)
    raise AssertionError(f"no hit after Redis came back: {results}")


async def _metrics(http: aiohttp.ClientSession, handle: Any) -> str:
    async with http.get(base(handle.metrics_url, "/metrics") + "/metrics") as response:
        assert response.status == 200
        return await response.text()


async def test_redis_outage_passes_through_and_recovers(sidecar: Any, openai_client: openai.AsyncOpenAI,
                                                        upstream: TestUpstream, redis_server: Any,
                                                        http: aiohttp.ClientSession) -> None:
    await chat(openai_client, **BODY)
    assert (await chat(openai_client, **BODY)).cache == HIT

    redis_server.stop()
    during = [await chat(openai_client, stream=stream, **BODY) for stream in (False, True, False)]
    assert [a.cache for a in during] == [BYPASS] * 3
    assert all(a.content == expected_chat(BODY)[0] for a in during)
    assert upstream.calls[CHAT] == 4
    assert metric_value(await _metrics(http, sidecar), "llmcache_backend_errors_total", backend="redis") >= 1
    async with http.get(base(sidecar.metrics_url, "/metrics") + "/readyz") as response:
        assert response.status == 200, "pass-through works, so the sidecar stays ready"

    redis_server.start()  # same port, empty (no persistence): hits must resume without a restart
    results = await _until_hit(openai_client)
    assert MISS in results, "the first call after the restart stores the answer again"


async def test_admin_stats_reports_a_degraded_backend(sidecar: Any, openai_client: openai.AsyncOpenAI,
                                                      redis_server: Any, http: aiohttp.ClientSession) -> None:
    stats_url = base(sidecar.metrics_url, "/metrics") + "/admin/stats"
    redis_server.stop()
    assert (await chat(openai_client, **BODY)).cache == BYPASS
    async with http.get(stats_url) as response:
        assert response.status == 200
        stats = await response.json()
    assert stats["degraded"] == ["redis"]
    assert stats["backends"]["redis"]["healthy"] is False and stats["backends"]["redis"]["errors"] >= 1
    redis_server.start()
    await _until_hit(openai_client)
    async with http.get(stats_url) as response:
        stats = await response.json()
    assert stats["degraded"] == [] and stats["backends"]["redis"]["healthy"] is True


async def test_error_event_mid_stream_is_passed_on_and_not_stored(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    upstream.error_after = 3
    with pytest.raises(openai.APIError) as caught:  # the client raises on an error event
        await chat(client, stream=True, **BODY)
    assert "failed mid-stream" in str(caught.value)
    upstream.error_after = None
    assert (await chat(client, **BODY)).cache == MISS
    assert upstream.calls[CHAT] == 2


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_upstream_timeout_is_an_error_and_not_stored(sidecar_factory: Any, client_for: Any, redis_server: Any,
                                                           upstream: TestUpstream, stream: bool) -> None:
    client = client_for(await sidecar_factory(redis_url=redis_server.url, upstream_timeout_seconds=1.0))
    if stream:
        upstream.stall_after = 2  # headers and two chunks, then silence
        _, finish, error = await _drain(client)
        assert error is not None or finish is None
    else:
        upstream.stall = True
        with pytest.raises(openai.APIStatusError) as caught:
            await chat(client, **BODY)
        assert caught.value.status_code == 504
    upstream.reset()
    assert (await chat(client, **BODY)).cache == MISS, "a timed-out answer must not be stored"
    assert (await chat(client, **BODY)).cache == HIT


async def test_hung_redis_passes_through(sidecar_factory: Any, client_for: Any, redis_server: Any,
                                         upstream: TestUpstream, http: aiohttp.ClientSession) -> None:
    """A frozen Redis (connections open, no answers) costs a backend timeout, never the call."""
    handle = await sidecar_factory(redis_url=redis_server.url, backend_timeout_seconds=0.2)
    client = client_for(handle, timeout=20.0)
    await chat(client, **BODY)
    redis_server.pause()
    try:
        during = [await chat(client, stream=stream, **BODY) for stream in (False, True)]
    finally:
        redis_server.resume()
    assert [a.cache for a in during] == [BYPASS, BYPASS]
    assert all(a.content == expected_chat(BODY)[0] for a in during)
    assert metric_value(await _metrics(http, handle), "llmcache_backend_errors_total", backend="redis") >= 1
    await _until_hit(client)


async def test_redis_dies_while_a_miss_streams(sidecar: Any, openai_client: openai.AsyncOpenAI,
                                               upstream: TestUpstream, redis_server: Any) -> None:
    """The lookup worked, the store cannot: the client still gets the whole stream."""
    upstream.stall_after = 2
    raw = await openai_client.chat.completions.with_raw_response.create(stream=True, **BODY)
    assert raw.headers["x-llmcache"] == MISS
    redis_server.stop()
    upstream.release()
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert text == expected_chat(BODY)[0]
    after = await chat(openai_client, **BODY)
    assert after.cache == BYPASS and after.content == expected_chat(BODY)[0]
