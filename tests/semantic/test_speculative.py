"""``speculative_upstream``: after an exact miss the request goes upstream while the semantic tier
looks; a semantic hit aborts that call, a miss or a bypass relays it.  End to end: the official
openai client -> sidecar (Redis, Milvus Lite, the real model) -> the test upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from llmcache_sidecar import state
from tests.conftest import free_port
from tests.semantic.test_milvus_tier import eventually
from tests.semantic.test_semantic_e2e import CHAT, PARAPHRASE, QUESTION, SEMANTIC, body
from tests.sidecar.calls import BYPASS, HIT, MISS, chat, metric_value, user
from tests.upstream import TestUpstream, expected_chat, split_tokens

NEW_QUESTION = "What is the boiling point of water at sea level?"
ABORTED = "llmcache_speculative_aborted_total"
TASK_NAME = "llmcache-speculative-upstream"


async def metric(handle: Any, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{handle.metrics_url.rstrip('/')}/metrics") as response:
            return metric_value(await response.text(), name, **labels)


def speculative_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == TASK_NAME]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
async def test_semantic_hit_is_served_and_the_upstream_call_aborted(stream: bool, semantic_sidecar_factory: Any,
                                                                    client_for: Any, upstream: TestUpstream) -> None:
    handle = await semantic_sidecar_factory(speculative_upstream=True)
    client = client_for(handle)
    assert (await chat(client, **body(QUESTION))).cache == MISS
    # the upstream holds the paraphrase's request (streamed: after its first chunk, so the sidecar
    # may hold an answer that has begun): only an abort can end it
    if stream:
        upstream.stall_after = 1
    else:
        upstream.stall = True
    hit = await chat(client, stream=stream, **body(PARAPHRASE))
    assert hit.cache == SEMANTIC
    assert hit.content == expected_chat(body(QUESTION))[0], "the stored question's answer is served"
    assert upstream.calls[CHAT] == 2, "the paraphrase went upstream too"
    aborted = upstream.last(CHAT)
    assert aborted.body["messages"] == user(PARAPHRASE)
    await eventually(lambda: _true(aborted.client_gone))
    assert await metric(handle, ABORTED) == 1
    assert await metric(handle, "llmcache_requests_total", result=SEMANTIC) == 1
    assert speculative_tasks() == [], "no upstream call is left running"
    # the aborted connection did not go back to the pool: the next call gets its own answer
    upstream.release()
    upstream.stall, upstream.stall_after = False, None
    fresh = await chat(client, stream=stream, **body(NEW_QUESTION))
    assert (fresh.cache, fresh.content) == (MISS, expected_chat(body(NEW_QUESTION))[0])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
async def test_miss_relays_the_call_in_flight_and_stores_it(stream: bool, semantic_sidecar_factory: Any,
                                                            client_for: Any, upstream: TestUpstream) -> None:
    handle = await semantic_sidecar_factory(speculative_upstream=True)
    client = client_for(handle)
    # streamed without a usage chunk asked for: the sidecar asks for one (to store the token
    # count) and hides it from the client, as on the plain miss path
    options = {"stream_options": None} if stream else {}
    miss = await chat(client, stream=stream, **options, **body(NEW_QUESTION))
    expected = expected_chat(body(NEW_QUESTION))[0]
    assert (miss.cache, miss.content, miss.finish_reason) == (MISS, expected, "stop")
    assert miss.headers["content-type"].startswith("text/event-stream" if stream else "application/json")
    if stream:
        assert miss.usage is None, "the client did not ask for a usage chunk"
        assert upstream.last(CHAT).body["stream_options"] == {"include_usage": True}
    again = await chat(client, **body(NEW_QUESTION))
    assert (again.cache, again.content) == (HIT, expected)
    assert again.usage is not None and again.usage["completion_tokens"] == len(split_tokens(expected))
    assert upstream.calls[CHAT] == 1, "the exact hit did not go upstream"
    assert await handle.app[state.SEMANTIC_TIER].count() == 1, "the miss was written to the semantic tier too"
    assert await metric(handle, ABORTED) == 0


async def test_no_store_miss_is_relayed_and_not_stored(semantic_sidecar_factory: Any, client_for: Any,
                                                       upstream: TestUpstream) -> None:
    client = client_for(await semantic_sidecar_factory(speculative_upstream=True))
    first = await chat(client, headers={"Cache-Control": "no-store"}, **body(NEW_QUESTION))
    assert (first.cache, first.content) == (MISS, expected_chat(body(NEW_QUESTION))[0])
    assert (await chat(client, **body(NEW_QUESTION))).cache == MISS
    assert upstream.calls[CHAT] == 2


@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
async def test_semantic_tier_failure_relays_the_upstream_answer(stream: bool, semantic_sidecar_factory: Any,
                                                                client_for: Any, upstream: TestUpstream) -> None:
    handle = await semantic_sidecar_factory(speculative_upstream=True)
    client = client_for(handle)
    assert (await chat(client, **body(QUESTION))).cache == MISS
    await handle.app[state.SEMANTIC_TIER].embedder.aclose()  # the embedder is gone: every lookup raises
    answer = await chat(client, stream=stream, **body(PARAPHRASE))
    assert (answer.cache, answer.content) == (BYPASS, expected_chat(body(PARAPHRASE))[0])
    assert upstream.calls[CHAT] == 2
    assert await metric(handle, "llmcache_backend_errors_total", backend="embedder") >= 1
    assert (await chat(client, **body(PARAPHRASE))).cache == HIT, "the bypassed answer was stored in the exact tier"
    assert await metric(handle, ABORTED) == 0


async def test_upstream_error_status_is_relayed_and_not_stored(semantic_sidecar_factory: Any, client_for: Any,
                                                               upstream: TestUpstream) -> None:
    client = client_for(await semantic_sidecar_factory(speculative_upstream=True))
    upstream.fail_status, upstream.fail_times = 503, 1
    with pytest.raises(openai.APIStatusError) as failed:
        await chat(client, **body(NEW_QUESTION))
    assert failed.value.status_code == 503
    assert failed.value.response.headers["x-llmcache"] == MISS
    assert (await chat(client, **body(NEW_QUESTION))).cache == MISS, "the error was not stored"


async def test_unreachable_upstream_is_a_502(semantic_sidecar_factory: Any) -> None:
    handle = await semantic_sidecar_factory(speculative_upstream=True, upstream_url=f"http://127.0.0.1:{free_port()}")
    url = handle.api_url.rstrip("/").removesuffix("/v1") + CHAT
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body(NEW_QUESTION)) as response:
            assert response.status == 502
            assert response.headers["X-LLMCache"] == MISS
            assert (await response.json())["error"]["code"] == "upstream_unreachable"
    assert speculative_tasks() == []


async def test_setting_off_a_semantic_hit_sends_nothing_upstream(semantic_sidecar_factory: Any, client_for: Any,
                                                                 upstream: TestUpstream) -> None:
    handle = await semantic_sidecar_factory()
    assert handle.app[state.SETTINGS].speculative_upstream is False, "off by default"
    client = client_for(handle)
    assert (await chat(client, **body(QUESTION))).cache == MISS
    assert (await chat(client, **body(PARAPHRASE))).cache == SEMANTIC
    assert upstream.calls[CHAT] == 1
    assert await metric(handle, ABORTED) == 0


async def _true(value: bool) -> bool:
    return value
