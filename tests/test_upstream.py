"""The test upstream itself: the answers tests rely on are what the official client receives."""

from __future__ import annotations

import openai
import pytest

from tests.upstream import (
    TestUpstream,
    embedding_vector,
    expected_chat,
    expected_completion,
    expected_tool_call,
)


@pytest.fixture
async def direct(upstream: TestUpstream):
    client = openai.AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key="test", max_retries=0, timeout=10)
    yield client
    await client.close()


async def test_chat_json_and_stream_agree(upstream: TestUpstream, direct: openai.AsyncOpenAI) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "temperature": 0}
    answer = await direct.chat.completions.create(**body)
    content, finish = expected_chat(body)
    assert answer.choices[0].message.content == content
    assert content.startswith("[rev A] answer ") and content.endswith("to: hello there")
    assert answer.choices[0].finish_reason == finish == "stop"
    assert answer.usage.completion_tokens > 0
    stream = await direct.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
    parts, usage, finishes = [], None, []
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finishes.append(choice.finish_reason)
    assert "".join(parts) == content
    assert finishes[-1] == "stop"
    assert usage == answer.usage
    assert upstream.calls["/v1/chat/completions"] == 2


async def test_answers_depend_on_parameters_and_revision(upstream: TestUpstream, direct: openai.AsyncOpenAI) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    first = (await direct.chat.completions.create(**body)).choices[0].message.content
    other = (await direct.chat.completions.create(**body, top_p=0.5)).choices[0].message.content
    upstream.revision = "B"
    third = (await direct.chat.completions.create(**body)).choices[0].message.content
    assert len({first, other, third}) == 3 and third.startswith("[rev B]")


async def test_max_tokens_truncates(direct: openai.AsyncOpenAI) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "a long question"}], "max_tokens": 2}
    answer = await direct.chat.completions.create(**body)
    assert (answer.choices[0].message.content, answer.choices[0].finish_reason) == expected_chat(body)
    assert answer.choices[0].finish_reason == "length"


async def test_tool_call(direct: openai.AsyncOpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    body = {"model": "m", "messages": [{"role": "user", "content": "weather?"}], "tools": tools}
    answer = await direct.chat.completions.create(**body)
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls"
    assert call.model_dump() == expected_tool_call(body)
    stream = await direct.chat.completions.create(**body, stream=True)
    arguments, finish = "", None
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                arguments += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert arguments == call.function.arguments and finish == "tool_calls"


async def test_completions_and_embeddings(direct: openai.AsyncOpenAI) -> None:
    body = {"model": "m", "prompt": "once upon"}
    answer = await direct.completions.create(**body)
    assert answer.choices[0].text == expected_completion(body)[0]
    stream = await direct.completions.create(**body, stream=True)
    assert "".join([c.choices[0].text async for c in stream if c.choices]) == answer.choices[0].text
    vectors = await direct.embeddings.create(model="e", input=["a", "b"])
    assert vectors.data[0].embedding == pytest.approx(embedding_vector("e", "a"))
    assert vectors.data[1].embedding != vectors.data[0].embedding


async def test_failure_controls(upstream: TestUpstream, direct: openai.AsyncOpenAI) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    upstream.fail_status, upstream.fail_times = 500, 1
    with pytest.raises(openai.InternalServerError):
        await direct.chat.completions.create(**body)
    await direct.chat.completions.create(**body)
    upstream.cut_after = 3
    stream = await direct.chat.completions.create(**body, stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    with pytest.raises(openai.APIConnectionError):
        await direct.chat.completions.create(**body)
    assert upstream.calls["/v1/chat/completions"] == 4
    models = await direct.models.list()
    assert [m.id for m in models.data] == ["test-model"]
