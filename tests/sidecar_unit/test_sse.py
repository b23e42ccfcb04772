"""Streams <-> stored completion objects: assembly and replay round trips."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcache_sidecar.entry import CorruptEntry, Entry
from llmcache_sidecar.sse import DONE, EventSplitter, StreamAssembler, event_data, replay

HEAD = {"id": "chatcmpl-1", "created": 1700000000, "model": "m", "system_fingerprint": "fp"}
USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}

TEXT_ANSWER: dict[str, Any] = {
    **HEAD, "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, friend."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": USAGE,
}
TOOL_ANSWER: dict[str, Any] = {
    **HEAD, "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": '{"tz": "CET"}'}},
    ]}, "logprobs": None, "finish_reason": "tool_calls"}],
    "usage": USAGE,
}
COMPLETION_ANSWER: dict[str, Any] = {
    "id": "cmpl-1", "object": "text_completion", "created": 1700000000, "model": "m",
    "choices": [{"index": 0, "text": "once upon", "finish_reason": "length",
                 "logprobs": {"tokens": ["once", " upon"], "token_logprobs": [-0.1, -0.2], "top_logprobs": None,
                              "text_offset": [0, 4]}}],
    "usage": USAGE,
}


def events(stream: bytes) -> list[bytes]:
    splitter = EventSplitter()
    found = splitter.feed(stream)
    assert splitter.pending == b""
    return [data for data in map(event_data, found) if data is not None]


def assemble(kind: str, stream: bytes) -> dict[str, Any]:
    payloads = events(stream)
    assert payloads[-1] == DONE and DONE not in payloads[:-1]
    assembler = StreamAssembler(kind)
    for payload in payloads[:-1]:
        assembler.add(orjson.loads(payload))
    return assembler.result()


@pytest.mark.parametrize(("kind", "answer"), [("chat", TEXT_ANSWER), ("chat", TOOL_ANSWER),
                                               ("completions", COMPLETION_ANSWER)])
def test_replay_then_assemble_gives_the_answer_back(kind: str, answer: dict[str, Any]) -> None:
    assert assemble(kind, replay(kind, answer, include_usage=True)) == answer


def test_usage_chunk_only_when_asked() -> None:
    with_usage = [orjson.loads(p) for p in events(replay("chat", TEXT_ANSWER, include_usage=True))[:-1]]
    assert with_usage[-1]["choices"] == [] and with_usage[-1]["usage"] == USAGE
    without = [orjson.loads(p) for p in events(replay("chat", TEXT_ANSWER, include_usage=False))[:-1]]
    assert all("usage" not in chunk for chunk in without)
    assert {chunk["object"] for chunk in without} == {"chat.completion.chunk"}
    assert without[0]["choices"][0]["delta"]["role"] == "assistant"
    assert without[-1]["choices"][0]["finish_reason"] == "stop"


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    payload = {**HEAD, "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def test_fine_grained_upstream_stream_assembles_and_replays() -> None:
    """The way OpenAI and vLLM stream: role first, pieces of content and tool-call arguments."""
    stream = b"".join([
        chunk({"role": "assistant", "content": ""}, usage=None),
        chunk({"content": "Let me "}, usage=None),
        chunk({"content": "check."}, usage=None),
        chunk({"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                               "function": {"name": "weather", "arguments": ""}}]}, usage=None),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}, usage=None),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}, usage=None),
        chunk({}, "tool_calls", usage=None),
        b"data: " + orjson.dumps({**HEAD, "object": "chat.completion.chunk", "choices": [], "usage": USAGE}) + b"\n\n",
        b"data: [DONE]\n\n",
    ])
    answer = assemble("chat", stream)
    assert answer["object"] == "chat.completion" and answer["usage"] == USAGE
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]}
    assert assemble("chat", replay("chat", answer, include_usage=True)) == answer


def test_splitter_handles_any_byte_boundaries_and_crlf() -> None:
    stream = replay("chat", TEXT_ANSWER, include_usage=True).replace(b"\n", b"\r\n")
    splitter = EventSplitter()
    found: list[bytes] = []
    for start in range(0, len(stream), 7):
        found.extend(splitter.feed(stream[start:start + 7]))
    assert [event_data(event) for event in found] == events(replay("chat", TEXT_ANSWER, include_usage=True))


def test_splitter_keeps_an_unfinished_event_pending() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b'data: {"a": 1}\n\ndata: {"b"') == [b'data: {"a": 1}']
    assert splitter.pending == b'data: {"b"'


def test_event_data_ignores_comments_and_joins_lines() -> None:
    assert event_data(b": keep-alive") is None
    assert event_data(b"event: x\ndata: one\ndata:two") == b"one\ntwo"


def test_entry_round_trip_and_streams() -> None:
    body = orjson.dumps(TEXT_ANSWER)
    entry = Entry.from_answer("chat", TEXT_ANSWER, created=1000.0, body=body)
    decoded = Entry.decode(entry.encode())
    assert decoded == entry and decoded.tokens == 12 and decoded.model == "m"
    assert decoded.age(1010.5) == 10.5
    assert assemble("chat", decoded.as_stream(include_usage=True)) == TEXT_ANSWER


@pytest.mark.parametrize("value", [b"", b"garbage", b'{"v": 99}\n{}', b'{"v": 1}\n{}', b"[1]\n{}"])
def test_corrupt_entries_are_refused(value: bytes) -> None:
    with pytest.raises(CorruptEntry):
        Entry.decode(value)


# --------------------------------------------------------------------------- properties

_text = st.text(max_size=40)
_tool_call = st.builds(
    lambda i, name, args: {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": args}},
    st.integers(0, 999), st.text(min_size=1, max_size=10), _text)


@st.composite
def chat_answers(draw: st.DrawFn) -> dict[str, Any]:
    calls = draw(st.lists(_tool_call, max_size=3))
    content = draw(st.none() | _text) if calls else draw(_text)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    answer = {**HEAD, "object": "chat.completion",
              "choices": [{"index": 0, "message": message, "logprobs": None,
                           "finish_reason": draw(st.sampled_from(["stop", "length", "tool_calls"]))}]}
    if draw(st.booleans()):
        answer["usage"] = USAGE
    return answer


def _pieces(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=5))) if len(text) > 1 else []
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in pairwise(bounds) if b > a]


@st.composite
def upstream_streams(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """An answer, and a stream an upstream could send for it: content and arguments in pieces."""
    answer = draw(chat_answers())
    choice = answer["choices"][0]
    message = choice["message"]
    chunks = [{"role": "assistant", "content": "" if message["content"] is not None else None}]
    chunks += [{"content": piece} for piece in _pieces(draw, message["content"] or "")]
    for index, call in enumerate(message.get("tool_calls", [])):
        chunks.append({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                       "function": {"name": call["function"]["name"], "arguments": ""}}]})
        chunks += [{"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                   for piece in _pieces(draw, call["function"]["arguments"])]
    events = [{**HEAD, "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]} for delta in chunks]
    events.append({**HEAD, "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]}]})
    if "usage" in answer:
        events.append({**HEAD, "object": "chat.completion.chunk", "choices": [], "usage": answer["usage"]})
    return answer, b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events) + b"data: [DONE]\n\n"


@settings(max_examples=150, deadline=None)
@given(chat_answers(), st.booleans())
def test_any_chat_answer_survives_replay(answer: dict[str, Any], include_usage: bool) -> None:
    back = assemble("chat", replay("chat", answer, include_usage=include_usage))
    if include_usage:
        assert back == answer
    else:
        assert "usage" not in back and back == {name: value for name, value in answer.items() if name != "usage"}


@settings(max_examples=150, deadline=None)
@given(upstream_streams())
def test_any_upstream_stream_assembles_to_its_answer(case: tuple[dict[str, Any], bytes]) -> None:
    answer, stream = case
    assert assemble("chat", stream) == answer
