"""Calls through the official openai client, collected into one comparable :class:`Answer`.

A streamed answer and a JSON answer end up in the same shape (content, finish reason, tool calls
and usage per choice), so a test can say "the hit is the same answer as the miss" in one line,
whichever way each one travelled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import openai

HIT = "hit-exact"
MISS = "miss"
BYPASS = "bypass"


@dataclass
class Answer:
    headers: Any  # httpx.Headers
    contents: list[str | None] = field(default_factory=list)
    finish_reasons: list[str | None] = field(default_factory=list)
    tool_calls: list[list[dict[str, Any]]] = field(default_factory=list)
    usage: dict[str, Any] | None = None

    @property
    def cache(self) -> str | None:
        """The ``X-LLMCache`` header: hit-exact | hit-semantic | miss | bypass."""
        return self.headers.get("x-llmcache")

    @property
    def content(self) -> str | None:
        return self.contents[0]

    @property
    def finish_reason(self) -> str | None:
        return self.finish_reasons[0]

    def same_answer(self) -> tuple[Any, ...]:
        """What must be identical between a miss and a later hit."""
        return (self.contents, self.finish_reasons, self.tool_calls, self.usage)


def _slot(values: list[Any], index: int, empty: Any) -> None:
    while len(values) <= index:
        values.append(empty() if callable(empty) else empty)


def _from_chat_json(headers: Any, completion: Any) -> Answer:
    answer = Answer(headers, usage=completion.usage.model_dump() if completion.usage else None)
    for choice in sorted(completion.choices, key=lambda c: c.index):
        answer.contents.append(choice.message.content)
        answer.finish_reasons.append(choice.finish_reason)
        answer.tool_calls.append([call.model_dump() for call in choice.message.tool_calls or []])
    return answer


async def _from_chat_stream(headers: Any, stream: Any) -> Answer:
    answer = Answer(headers)
    calls: list[dict[int, dict[str, Any]]] = []
    async for chunk in stream:
        if chunk.usage is not None:
            answer.usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            i = choice.index
            _slot(answer.contents, i, None)
            _slot(answer.finish_reasons, i, None)
            _slot(calls, i, dict)
            if choice.delta.content is not None:
                answer.contents[i] = (answer.contents[i] or "") + choice.delta.content
            for delta in choice.delta.tool_calls or []:
                call = calls[i].setdefault(delta.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                call["id"] = delta.id or call["id"]
                if delta.function is not None:
                    call["function"]["name"] += delta.function.name or ""
                    call["function"]["arguments"] += delta.function.arguments or ""
            if choice.finish_reason is not None:
                answer.finish_reasons[i] = choice.finish_reason
    answer.tool_calls = [[per_choice[k] for k in sorted(per_choice)] for per_choice in calls]
    for i, reason in enumerate(answer.finish_reasons):
        if reason == "tool_calls" and answer.contents[i] == "":
            answer.contents[i] = None  # a JSON tool-call message has content null
    return answer


async def chat(client: openai.AsyncOpenAI, *, stream: bool = False, headers: dict[str, str] | None = None, **body: Any) -> Answer:
    """One chat completion; streamed requests ask for the usage chunk unless told otherwise."""
    if stream:
        body.setdefault("stream_options", {"include_usage": True})
    raw = await client.chat.completions.with_raw_response.create(stream=stream, extra_headers=headers, **body)
    parsed = raw.parse()
    if stream:
        return await _from_chat_stream(raw.headers, parsed)
    return _from_chat_json(raw.headers, parsed)


async def complete(client: openai.AsyncOpenAI, *, stream: bool = False, headers: dict[str, str] | None = None, **body: Any) -> Answer:
    """One legacy text completion, in the same :class:`Answer` shape (tool calls always empty)."""
    if stream:
        body.setdefault("stream_options", {"include_usage": True})
    raw = await client.completions.with_raw_response.create(stream=stream, extra_headers=headers, **body)
    parsed = raw.parse()
    answer = Answer(raw.headers)
    if not stream:
        answer.usage = parsed.usage.model_dump() if parsed.usage else None
        for choice in sorted(parsed.choices, key=lambda c: c.index):
            answer.contents.append(choice.text)
            answer.finish_reasons.append(choice.finish_reason)
            answer.tool_calls.append([])
        return answer
    async for chunk in parsed:
        if chunk.usage is not None:
            answer.usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            i = choice.index
            _slot(answer.contents, i, "")
            _slot(answer.finish_reasons, i, None)
            _slot(answer.tool_calls, i, list)
            answer.contents[i] = (answer.contents[i] or "") + (choice.text or "")
            if choice.finish_reason is not None:
                answer.finish_reasons[i] = choice.finish_reason
    return answer


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def base(url: str, suffix: str) -> str:
    """``url`` without a trailing ``suffix`` (a handle's URL may or may not include it)."""
    return url.rstrip("/").removesuffix(suffix)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` (exact sample name) whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total
