"""Server-sent events: split an upstream stream into events, assemble its chunks into one
completion object, and replay a completion object as a stream.

The cache stores every answer as one completion object (what a non-streamed call returns), so
one entry serves streamed and non-streamed requests alike:  ``assemble(replay(x)) == x`` for
everything a client can see (content, tool calls, finish_reason, usage, logprobs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

DONE = b"[DONE]"

#: Delta fields that are sent once and must not be concatenated when they repeat.
_SET_ONCE = frozenset({"role", "finish_reason", "stop_reason", "index", "id", "type"})


class EventSplitter:
    """Incremental splitter: feed raw bytes, get back complete event blocks as they close."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *events, self._buffer = buffer.split(b"\n\n")
        return [event for event in events if event]

    @property
    def pending(self) -> bytes:
        """Bytes of an event that has not been closed yet (a cut stream leaves some)."""
        return self._buffer


def event_data(event: bytes) -> bytes | None:
    """The ``data:`` payload of one event block (lines joined by newlines); None if it has none."""
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(lines)


def encode_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _merge(target: dict[str, Any], delta: dict[str, Any]) -> None:
    """Fold one streamed delta into the accumulated object: strings concatenate, lists extend,
    objects merge, ``tool_calls`` merge by their ``index``."""
    for name, value in delta.items():
        if value is None:
            target.setdefault(name, None)
            continue
        current = target.get(name)
        if name == "tool_calls" and isinstance(value, list):
            calls: list[dict[str, Any]] = current if isinstance(current, list) else []
            target["tool_calls"] = calls
            for call in value:
                index = call.get("index", len(calls))
                while len(calls) <= index:
                    calls.append({})
                _merge(calls[index], call)
        elif name in _SET_ONCE or current is None:
            target[name] = _copy(value)
        elif isinstance(current, str) and isinstance(value, str):
            target[name] = current + value
        elif isinstance(current, list) and isinstance(value, list):
            current.extend(value)
        elif isinstance(current, dict) and isinstance(value, dict):
            _merge(current, value)
        else:
            target[name] = _copy(value)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _copy(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


class StreamAssembler:
    """Builds the completion object a streamed answer amounts to, chunk by chunk."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._head: dict[str, Any] | None = None
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        if self._head is None:
            self._head = {name: value for name, value in chunk.items() if name not in ("choices", "usage", "object")}
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            target = self._choices.setdefault(index, {"index": index})
            if self.kind == "chat":
                message = target.setdefault("message", {})
                _merge(message, choice.get("delta") or {})
                _merge(target, {name: value for name, value in choice.items() if name not in ("delta", "index")})
            else:
                _merge(target, {name: value for name, value in choice.items() if name != "index"})

    def result(self) -> dict[str, Any]:
        answer: dict[str, Any] = dict(self._head or {})
        answer["object"] = "chat.completion" if self.kind == "chat" else "text_completion"
        choices = [self._choices[index] for index in sorted(self._choices)]
        if self.kind == "chat":
            for choice in choices:
                message = choice.setdefault("message", {})
                message.setdefault("role", "assistant")
                message.setdefault("content", None)
                for call in message.get("tool_calls") or ():
                    call.pop("index", None)
                choice.setdefault("finish_reason", None)
        answer["choices"] = choices
        if self._usage is not None:
            answer["usage"] = self._usage
        return answer


def replay(kind: str, answer: dict[str, Any], include_usage: bool) -> bytes:
    """The stream a client would have received for ``answer``, ending with ``[DONE]``."""
    head = {name: value for name, value in answer.items() if name not in ("choices", "usage", "object")}
    head["object"] = "chat.completion.chunk" if kind == "chat" else "text_completion"
    pieces: list[bytes] = []
    for choice in answer.get("choices") or ():
        chunks = _chat_choice_chunks(choice) if kind == "chat" else _completion_choice_chunks(choice)
        pieces.extend(encode_event({**head, "choices": [part]}) for part in chunks)
    if include_usage and answer.get("usage") is not None:
        pieces.append(encode_event({**head, "choices": [], "usage": answer["usage"]}))
    pieces.append(b"data: [DONE]\n\n")
    return b"".join(pieces)


def _chat_choice_chunks(choice: dict[str, Any]) -> Iterator[dict[str, Any]]:
    index = choice.get("index", 0)
    message = choice.get("message") or {}
    content = message.get("content")
    extra = {name: value for name, value in choice.items()
             if name not in ("index", "message", "finish_reason", "logprobs") and value is not None}
    first = {"role": message.get("role", "assistant"), "content": "" if isinstance(content, str) else None}
    yield {"index": index, "delta": first, "logprobs": None, "finish_reason": None}
    if content:
        yield {"index": index, "delta": {"content": content}, "logprobs": choice.get("logprobs"), "finish_reason": None}
    elif choice.get("logprobs") is not None:
        yield {"index": index, "delta": {}, "logprobs": choice["logprobs"], "finish_reason": None}
    for name, value in message.items():
        if name in ("role", "content", "tool_calls") or value is None or value == []:
            continue
        yield {"index": index, "delta": {name: value}, "logprobs": None, "finish_reason": None}
    for position, call in enumerate(message.get("tool_calls") or ()):
        yield {"index": index, "delta": {"tool_calls": [{"index": position, **call}]}, "logprobs": None,
               "finish_reason": None}
    yield {"index": index, "delta": {}, "logprobs": None, "finish_reason": choice.get("finish_reason"), **extra}


def _completion_choice_chunks(choice: dict[str, Any]) -> Iterator[dict[str, Any]]:
    index = choice.get("index", 0)
    extra = {name: value for name, value in choice.items()
             if name not in ("index", "text", "finish_reason", "logprobs") and value is not None}
    yield {"index": index, "text": choice.get("text") or "", "logprobs": choice.get("logprobs"), "finish_reason": None}
    yield {"index": index, "text": "", "logprobs": None, "finish_reason": choice.get("finish_reason"), **extra}
