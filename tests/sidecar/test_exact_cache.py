"""The exact tier end to end, through the official openai client, on Redis and in-process."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from tests.sidecar.calls import BYPASS, HIT, MISS, chat, complete, user
from tests.upstream import (
    TestUpstream,
    expected_chat,
    expected_completion,
    expected_logprobs,
    expected_tool_call,
    split_tokens,
)

CHAT = "/v1/chat/completions"
BODY: dict[str, Any] = {"model": "test-model", "messages": user("What is the capital of France?"), "temperature": 0}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather of a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


async def test_miss_then_hit(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    first = await chat(client, **BODY)
    assert first.cache == MISS
    assert first.content == expected_chat(BODY)[0]
    assert upstream.calls[CHAT] == 1

    second = await chat(client, **BODY)
    assert second.cache == HIT
    assert upstream.calls[CHAT] == 1, "a hit must not reach the upstream"
    assert second.same_answer() == first.same_answer()
    assert int(second.headers["age"]) >= 0


@pytest.mark.parametrize("store_stream", [False, True], ids=["store-json", "store-stream"])
@pytest.mark.parametrize("read_stream", [False, True], ids=["read-json", "read-stream"])
async def test_stream_and_json_replay_each_other(client: openai.AsyncOpenAI, upstream: TestUpstream,
                                                  store_stream: bool, read_stream: bool) -> None:
    body = {**BODY, "messages": user(f"combination {store_stream} {read_stream}")}
    first = await chat(client, stream=store_stream, **body)
    second = await chat(client, stream=read_stream, **body)
    assert (first.cache, second.cache) == (MISS, HIT)
    assert upstream.calls[CHAT] == 1
    assert second.same_answer() == first.same_answer()
    assert (second.content, second.finish_reason) == expected_chat(body)
    assert second.usage is not None and second.usage["completion_tokens"] > 0


@pytest.mark.parametrize("store_stream", [False, True], ids=["store-json", "store-stream"])
@pytest.mark.parametrize("read_stream", [False, True], ids=["read-json", "read-stream"])
async def test_tool_calls_survive(client: openai.AsyncOpenAI, upstream: TestUpstream, store_stream: bool, read_stream: bool) -> None:
    body = {**BODY, "messages": user("weather in Paris?"), "tools": TOOLS}
    first = await chat(client, stream=store_stream, **body)
    second = await chat(client, stream=read_stream, **body)
    assert (first.cache, second.cache) == (MISS, HIT)
    assert second.finish_reason == "tool_calls"
    assert second.tool_calls == [[expected_tool_call(body)]]
    assert second.content is None
    assert second.same_answer() == first.same_answer()


@pytest.mark.parametrize("store_stream", [False, True], ids=["store-json", "store-stream"])
@pytest.mark.parametrize("read_stream", [False, True], ids=["read-json", "read-stream"])
async def test_completions_endpoint(client: openai.AsyncOpenAI, upstream: TestUpstream, store_stream: bool, read_stream: bool) -> None:
    body = {"model": "test-model", "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}
    first = await complete(client, stream=store_stream, **body)
    second = await complete(client, stream=read_stream, **body)
    assert (first.cache, second.cache) == (MISS, HIT)
    assert upstream.calls["/v1/completions"] == 1
    assert (second.content, second.finish_reason) == expected_completion(body) == (first.content, first.finish_reason)
    assert second.usage == first.usage


async def test_streamed_miss_is_forwarded_before_the_upstream_finishes(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    """Chunk by chunk: the client gets the first tokens while the upstream is still stalled."""
    upstream.stall_after = 3
    raw = await asyncio.wait_for(client.chat.completions.with_raw_response.create(stream=True, **BODY), 10)
    stream = raw.parse().__aiter__()
    first_chunks = [await asyncio.wait_for(stream.__anext__(), 10) for _ in range(2)]
    assert first_chunks[0].choices[0].delta.role == "assistant"
    upstream.release()
    rest = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in first_chunks + rest if c.choices)
    assert text == expected_chat(BODY)[0]
    assert (await chat(client, **BODY)).cache == HIT


# Each variant changes one thing that changes the answer: it must be a miss, answered by the
# upstream for that exact request.
VARIANTS: dict[str, dict[str, Any]] = {
    "temperature": {"temperature": 0.5},
    "top_p": {"top_p": 0.5},
    "max_tokens": {"max_tokens": 3},
    "stop": {"stop": ["\n"]},
    "seed": {"seed": 7},
    "model": {"model": "other-model"},
    "system-prompt": {"messages": [{"role": "system", "content": "Answer in French."}, *BODY["messages"]]},
    "earlier-turn": {"messages": [*user("hi"), {"role": "assistant", "content": "hello"}, *BODY["messages"]]},
    "question": {"messages": user("What is the capital of Spain?")},
    "tools": {"tools": TOOLS, "tool_choice": "none"},
    "response_format": {"response_format": {"type": "json_object"}},
    "logprobs": {"logprobs": True},
    "presence_penalty": {"presence_penalty": 0.5},
    "unknown-field": {"extra_body": {"repetition_penalty": 1.1}},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_changed_parameter_is_a_miss(client: openai.AsyncOpenAI, upstream: TestUpstream, variant: str) -> None:
    assert (await chat(client, **BODY)).cache == MISS
    changed = {**BODY, **VARIANTS[variant]}
    answer = await chat(client, **changed)
    assert answer.cache == MISS
    assert upstream.calls[CHAT] == 2
    sent = upstream.last(CHAT).body
    assert (answer.content, answer.finish_reason) == expected_chat(sent)
    assert (await chat(client, **changed)).cache == HIT
    assert (await chat(client, **BODY)).content == expected_chat(BODY)[0]
    assert upstream.calls[CHAT] == 2


async def test_no_store_stores_nothing(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    first = await chat(client, headers={"Cache-Control": "no-store"}, **BODY)
    assert first.cache in (MISS, BYPASS)
    assert first.content == expected_chat(BODY)[0]
    assert (await chat(client, **BODY)).cache == MISS
    assert upstream.calls[CHAT] == 2


async def test_no_store_still_answers_from_the_cache(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    await chat(client, **BODY)
    assert (await chat(client, headers={"Cache-Control": "no-store"}, **BODY)).cache == HIT
    assert upstream.calls[CHAT] == 1


async def test_no_cache_skips_lookup_but_stores(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    await chat(client, **BODY)
    upstream.revision = "B"  # the upstream now answers differently: a fresh answer is visible
    fresh = await chat(client, headers={"Cache-Control": "no-cache"}, **BODY)
    assert fresh.cache == MISS
    assert fresh.content == expected_chat(BODY, revision="B")[0]
    assert upstream.calls[CHAT] == 2
    later = await chat(client, **BODY)
    assert later.cache == HIT
    assert later.content == expected_chat(BODY, revision="B")[0], "no-cache must store the fresh answer"


async def test_max_age(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    await chat(client, **BODY)
    await asyncio.sleep(1.1)  # the entry is now at least one second old
    young_enough = await chat(client, headers={"Cache-Control": "max-age=3600"}, **BODY)
    assert young_enough.cache == HIT
    assert int(young_enough.headers["age"]) >= 1
    upstream.revision = "B"  # tells a fresh answer from the stored one
    too_old = await chat(client, headers={"Cache-Control": "max-age=0"}, **BODY)
    assert too_old.cache == MISS
    assert upstream.calls[CHAT] == 2
    refreshed = await chat(client, **BODY)
    assert refreshed.cache == HIT
    assert refreshed.content == expected_chat(BODY, revision="B")[0], "the max-age miss stores its fresh answer"


async def test_temperature_above_the_maximum_bypasses(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    body = {**BODY, "temperature": 1.0}  # default max_temperature is 0.8
    answers = [await chat(client, **body) for _ in range(2)]
    assert [a.cache for a in answers] == [BYPASS, BYPASS]
    assert answers[0].content == expected_chat(body)[0]
    assert upstream.calls[CHAT] == 2


async def test_more_than_one_choice_bypasses(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    body = {**BODY, "n": 2}
    answers = [await chat(client, **body) for _ in range(2)]
    assert [a.cache for a in answers] == [BYPASS, BYPASS]
    assert answers[1].contents == [expected_chat(body, index=i)[0] for i in range(2)]
    assert upstream.calls[CHAT] == 2
    streamed = await chat(client, stream=True, **body)
    assert streamed.cache == BYPASS and len(streamed.contents) == 2


@pytest.mark.parametrize("tier", ["redis", "memory"])
async def test_ttl_expires_entries(sidecar_factory: Any, client_for: Any, upstream: TestUpstream,
                                   request: pytest.FixtureRequest, tier: str) -> None:
    redis_server = request.getfixturevalue("redis_server") if tier == "redis" else None
    handle = await sidecar_factory(redis_url=redis_server.url if redis_server else None, ttl_seconds=1)
    client = client_for(handle)
    await chat(client, **BODY)
    if redis_server is not None:
        ttls = [redis_server.client().ttl(key) for key in redis_server.scan("llmcache:*:e:*")]
        assert ttls and all(0 < ttl <= 1 for ttl in ttls)
    assert (await chat(client, **BODY)).cache == HIT
    await asyncio.sleep(1.5)
    assert (await chat(client, **BODY)).cache == MISS
    assert upstream.calls[CHAT] == 2


async def test_replayed_stream_is_well_formed_sse(tier_sidecar: Any, client: openai.AsyncOpenAI, http: Any) -> None:
    await chat(client, **BODY)
    url = tier_sidecar.api_url.rstrip("/").removesuffix("/v1") + "/v1/chat/completions"
    async with http.post(url, json={**BODY, "stream": True}) as response:
        assert response.status == 200
        assert response.headers["X-LLMCache"] == HIT
        assert response.content_type == "text/event-stream"
        raw = (await response.read()).decode()
    events = [e for e in raw.split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events), raw
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p["choices"]) == expected_chat(BODY)[0]
    assert not any(p.get("usage") for p in payloads), "no usage chunk unless stream_options.include_usage"


async def test_usage_chunk_only_when_asked(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    body = {**BODY, "messages": user("usage please?")}
    miss = await chat(client, stream=True, stream_options=None, **body)
    hit = await chat(client, stream=True, stream_options=None, **body)
    assert (miss.cache, hit.cache) == (MISS, HIT)
    assert miss.usage is None and hit.usage is None, "the client did not ask for a usage chunk"
    as_json = await chat(client, **body)
    assert as_json.cache == HIT
    assert as_json.usage is not None and as_json.usage["completion_tokens"] == len(split_tokens(expected_chat(body)[0]))


async def test_fleet_counters_in_redis(sidecar: Any, openai_client: openai.AsyncOpenAI, redis_server: Any) -> None:
    for _ in range(3):
        await chat(openai_client, **BODY)
    stats: dict[bytes, bytes] = {}
    for _ in range(50):  # the sidecar adds its counts in the background, about every second
        stats = redis_server.client().hgetall("llmcache:default:stats")
        if int(stats.get(b"requests", 0)) >= 3:
            break
        await asyncio.sleep(0.1)
    assert int(stats[b"requests"]) == 3
    assert int(stats[b"hitsExact"]) == 2
    assert int(stats[b"tokensSaved"]) > 0


@pytest.mark.parametrize("store_stream", [False, True], ids=["store-json", "store-stream"])
async def test_long_unicode_answer_round_trips(client: openai.AsyncOpenAI, upstream: TestUpstream, store_stream: bool) -> None:
    """Thousands of chunks with multi-byte characters: TCP reads split events and characters
    anywhere, and the stored answer must still be exactly what was streamed."""
    question = " ".join(f"Ünïcödé-{i} 日本語 ✓ 🙂" for i in range(800))
    body = {**BODY, "messages": user(question)}
    first = await chat(client, stream=store_stream, **body)
    assert first.content == expected_chat(body)[0]
    for read_stream in (False, True):
        again = await chat(client, stream=read_stream, **body)
        assert again.cache == HIT
        assert again.same_answer() == first.same_answer()
    assert upstream.calls[CHAT] == 1


async def test_concurrent_identical_misses_all_get_the_answer(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    upstream.delay = 0.2  # they all arrive before the first answer is stored
    answers = await asyncio.gather(*(chat(client, stream=i % 2 == 1, **BODY) for i in range(12)))
    assert all(a.content == expected_chat(BODY)[0] for a in answers)
    assert all(a.cache in (MISS, HIT) for a in answers)
    upstream.delay = 0.0
    assert (await chat(client, **BODY)).cache == HIT


async def test_client_leaving_mid_stream_does_not_hurt_the_sidecar(client: openai.AsyncOpenAI, upstream: TestUpstream) -> None:
    upstream.token_interval = 0.01
    raw = await client.chat.completions.with_raw_response.create(stream=True, **BODY)
    stream = raw.parse()
    async for _ in stream:
        break
    await stream.close()  # the client hangs up after the first chunk
    upstream.token_interval = 0.0
    body = {**BODY, "messages": user("and another question")}
    assert (await chat(client, **body)).cache == MISS
    assert (await chat(client, **body)).cache == HIT


@pytest.mark.parametrize("store_stream", [False, True], ids=["store-json", "store-stream"])
async def test_logprobs_survive(client: openai.AsyncOpenAI, upstream: TestUpstream, store_stream: bool) -> None:
    body = {**BODY, "messages": user("how sure are you?"), "logprobs": True}
    create = client.chat.completions.create
    if store_stream:
        stream = await create(stream=True, **body)
        [chunk async for chunk in stream]
    else:
        await create(**body)
    hit = await client.chat.completions.with_raw_response.create(**body)
    assert hit.headers["x-llmcache"] == HIT
    logprobs = hit.parse().choices[0].logprobs
    assert logprobs is not None
    assert logprobs.model_dump()["content"] == expected_logprobs(expected_chat(body)[0])["content"]
    streamed = await create(stream=True, **body)
    pieces = [entry.model_dump() for chunk in [c async for c in streamed] for choice in chunk.choices
              if choice.logprobs and choice.logprobs.content for entry in choice.logprobs.content]
    assert pieces == expected_logprobs(expected_chat(body)[0])["content"]
    assert upstream.calls[CHAT] == 1


async def test_json_answer_is_sent_before_it_is_stored(sidecar: Any, client_for: Any, upstream: TestUpstream,
                                                       redis_server: Any) -> None:
    """The client of a JSON miss does not wait for the Redis SET; a repeat while the write is
    still in flight is a hit all the same (and reaches Redis once the write is through)."""
    import redis.asyncio as aioredis

    admin = aioredis.from_url(redis_server.url)

    async def entries() -> int:
        return len(await admin.keys("llmcache:*:e:*"))

    body = {**BODY, "messages": user("answered before stored")}
    try:
        await admin.execute_command("CLIENT", "PAUSE", "4000", "WRITE")  # reads go on, writes wait
        first = await asyncio.wait_for(chat(client_for(sidecar), **body), timeout=2.5)
        assert first.cache == MISS
        # a new client, so a new connection: not ordered behind the first request's handler
        repeat = await asyncio.wait_for(chat(client_for(sidecar), **body), timeout=2.5)
        assert repeat.cache == HIT
        assert repeat.same_answer() == first.same_answer()
        assert await entries() == 0, "the write should still be held by CLIENT PAUSE"
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
    for _ in range(100):
        if await entries():
            break
        await asyncio.sleep(0.05)
    assert await entries() == 1
    await admin.aclose()
    assert upstream.calls[CHAT] == 1
