"""The semantic tier end to end: the official openai client -> sidecar (Redis + Milvus Lite + the
real model) -> the test upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from llmcache_sidecar import state
from tests.semantic.conftest import MilvusServer
from tests.semantic.test_milvus_tier import eventually
from tests.sidecar.calls import BYPASS, MISS, chat, complete, metric_value, user
from tests.upstream import TestUpstream, expected_chat

SEMANTIC = "hit-semantic"
QUESTION = "How do I reset my password?"
PARAPHRASE = "I forgot my password, how can I reset it?"
CHAT = "/v1/chat/completions"


def body(question: str, **extra: Any) -> dict[str, Any]:
    return {"model": "test-model", "messages": user(question), "temperature": 0, **extra}


async def test_paraphrase_is_a_semantic_hit_with_the_first_answer(semantic_sidecar_factory: Any, client_for: Any,
                                                                  upstream: TestUpstream) -> None:
    handle = await semantic_sidecar_factory()
    client = client_for(handle)
    first = await chat(client, **body(QUESTION))
    assert first.cache == MISS
    again = await chat(client, **body(PARAPHRASE))
    assert again.cache == SEMANTIC
    assert again.content == expected_chat(body(QUESTION))[0], "the stored question's answer is served"
    similarity = float(again.headers["x-llmcache-similarity"])
    assert handle.app[state.SETTINGS].similarity_threshold <= similarity < 1.0
    assert "age" in again.headers
    streamed = await chat(client, stream=True, **body(PARAPHRASE))
    assert (streamed.cache, streamed.content) == (SEMANTIC, first.content)
    unrelated = await chat(client, **body("What is the capital of France?"))
    assert unrelated.cache == MISS
    assert upstream.calls[CHAT] == 2
    # three distinct questions, each embedded once (the repeated paraphrase and the stores
    # after misses reuse the recent vector)
    assert await _metric(handle, "llmcache_embedding_seconds_count") == 3


async def test_completions_prompt_paraphrase_is_a_semantic_hit(semantic_sidecar_factory: Any, client_for: Any,
                                                                upstream: TestUpstream) -> None:
    client = client_for(await semantic_sidecar_factory())
    first = await complete(client, model="test-model", prompt=QUESTION, temperature=0)
    assert first.cache == MISS
    again = await complete(client, model="test-model", prompt=PARAPHRASE, temperature=0)
    assert (again.cache, again.content) == (SEMANTIC, first.content)
    assert upstream.calls["/v1/completions"] == 1


@pytest.mark.parametrize("change", ["system prompt", "temperature", "max_tokens", "model", "earlier turns"])
async def test_no_semantic_hit_when_another_key_part_differs(change: str, semantic_sidecar_factory: Any,
                                                             client_for: Any, upstream: TestUpstream) -> None:
    client = client_for(await semantic_sidecar_factory())
    assert (await chat(client, **body(QUESTION))).cache == MISS
    variants = {
        "system prompt": body(PARAPHRASE, messages=[{"role": "system", "content": "Answer in French."}, *user(PARAPHRASE)]),
        "temperature": body(PARAPHRASE, temperature=0.5),
        "max_tokens": body(PARAPHRASE, max_tokens=7),
        "model": body(PARAPHRASE, model="other-model"),
        "earlier turns": body(PARAPHRASE, messages=[*user("hi"), {"role": "assistant", "content": "hello"}, *user(PARAPHRASE)]),
    }
    assert (await chat(client, **variants[change])).cache == MISS
    assert (await chat(client, **body(PARAPHRASE))).cache == SEMANTIC  # the control: same parts do hit


async def test_no_semantic_hit_across_revisions(semantic_sidecar_factory: Any, client_for: Any) -> None:
    old = client_for(await semantic_sidecar_factory(model_revision="r1"))
    new = client_for(await semantic_sidecar_factory(model_revision="r2"))
    assert (await chat(old, **body(QUESTION))).cache == MISS
    assert (await chat(new, **body(PARAPHRASE))).cache == MISS
    assert (await chat(old, **body(PARAPHRASE))).cache == SEMANTIC


async def test_no_semantic_hit_across_tenants(semantic_sidecar_factory: Any, client_for: Any) -> None:
    client = client_for(await semantic_sidecar_factory(tenant_header="X-User"))
    assert (await chat(client, headers={"X-User": "alice"}, **body(QUESTION))).cache == MISS
    assert (await chat(client, headers={"X-User": "bob"}, **body(PARAPHRASE))).cache == MISS
    assert (await chat(client, **body(PARAPHRASE))).cache == MISS
    assert (await chat(client, headers={"X-User": "alice"}, **body(PARAPHRASE))).cache == SEMANTIC


async def test_semantic_entries_expire(semantic_sidecar_factory: Any, client_for: Any) -> None:
    client = client_for(await semantic_sidecar_factory(semantic_ttl_seconds=1, ttl_seconds=3600))
    assert (await chat(client, **body(QUESTION))).cache == MISS
    assert (await chat(client, **body(PARAPHRASE))).cache == SEMANTIC
    await asyncio.sleep(1.2)
    assert (await chat(client, **body(PARAPHRASE))).cache == MISS
    assert (await chat(client, **body(QUESTION))).cache == "hit-exact", "the exact entry lives on"


async def test_admin_invalidate_covers_the_semantic_tier(semantic_sidecar_factory: Any, client_for: Any) -> None:
    handle = await semantic_sidecar_factory(model_revision="r1")
    client = client_for(handle)
    assert (await chat(client, **body(QUESTION))).cache == MISS
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{handle.metrics_url.rstrip('/')}/admin/invalidate", json={"revision": "r1"}) as response:
            assert response.status == 200
            report = await response.json()
    assert report["semanticEntries"] == 1
    assert await handle.app[state.SEMANTIC_TIER].count() == 0
    assert (await chat(client, **body(PARAPHRASE))).cache == MISS


async def test_embedder_failure_is_a_bypass_counted_as_embedder(semantic_sidecar_factory: Any, client_for: Any,
                                                                upstream: TestUpstream) -> None:
    handle = await semantic_sidecar_factory()
    client = client_for(handle)
    assert (await chat(client, **body(QUESTION))).cache == MISS
    await handle.app[state.SEMANTIC_TIER].embedder.aclose()  # the embedder is gone
    answer = await chat(client, **body(PARAPHRASE))
    assert answer.cache == BYPASS
    assert answer.content == expected_chat(body(PARAPHRASE))[0]
    assert (await chat(client, **body(QUESTION))).cache == "hit-exact", "the exact tier still serves"
    assert await _metric(handle, "llmcache_backend_errors_total", backend="embedder") >= 1


async def test_milvus_outage_is_a_bypass_then_recovers(sidecar_factory: Any, redis_server: Any, cache_name: str,
                                                       milvus_server: MilvusServer, client_for: Any) -> None:
    handle = await sidecar_factory(redis_url=redis_server.url, semantic_enabled=True, milvus_uri=milvus_server.uri,
                                   cache_name=cache_name, embedding_device="cpu")
    tier = handle.app[state.SEMANTIC_TIER]
    await tier.wait_loaded()
    client = client_for(handle)
    assert (await chat(client, **body(QUESTION))).cache == MISS
    await tier.flush()
    milvus_server.stop()
    asked = iter(range(10_000))  # a new question each time: a repeated one would be an exact hit
    await eventually(lambda: _bypassed(client, f"What is the tallest mountain on planet {next(asked)}?"))
    assert await _metric(handle, "llmcache_backend_errors_total", backend="milvus") >= 1
    assert (await chat(client, **body(QUESTION))).cache == "hit-exact"
    milvus_server.start()
    await eventually(lambda: _is_true(tier.connected), timeout=30)
    await tier.wait_loaded()
    await asyncio.sleep(1.1)  # the proxy's back-off after the last failure (health.BACKOFF_SECONDS)
    answer = await chat(client, **body(PARAPHRASE))
    assert answer.cache == SEMANTIC
    assert answer.content == expected_chat(body(QUESTION))[0]


async def _bypassed(client: Any, question: str) -> bool:
    return (await chat(client, **body(question))).cache == BYPASS


async def _is_true(value: bool) -> bool:
    return value


async def _metric(handle: Any, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{handle.metrics_url.rstrip('/')}/metrics") as response:
            return metric_value(await response.text(), name, **labels)


async def test_unloadable_model_runs_without_a_semantic_tier(sidecar_factory: Any, redis_server: Any, tmp_path: Any,
                                                             client_for: Any, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "model").mkdir()
    handle = await sidecar_factory(redis_url=redis_server.url, semantic_enabled=True,
                                   embedding_model=str(tmp_path / "model"), embedding_device="cpu")
    assert handle.app[state.SEMANTIC_TIER] is None
    assert "semantic tier disabled" in caplog.text and "model.onnx is missing" in caplog.text
    client = client_for(handle)
    assert (await chat(client, **body(QUESTION))).cache == MISS
    assert (await chat(client, **body(QUESTION))).cache == "hit-exact"
