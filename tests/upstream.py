"""A small OpenAI-compatible test upstream: the only stand-in allowed (for the LLM).

Answers are deterministic: a function of the whole request body (every field except ``stream``
and ``stream_options``, which only change the transport) and of the settable ``revision``.  So a
test can always compute what the upstream would have said (:func:`chat_content`,
:func:`completion_text`, :func:`embedding_vector`) and compare it with what came back through the
sidecar, streamed or not.

Controls (attributes of :class:`TestUpstream`, or ``POST /_control`` with a JSON object of the
same names for an upstream running in another process):

- ``revision``: part of every answer (``"[rev A] ..."``)
- ``tenant_header``: a request carrying this header is answered as revision ``"<revision>/<tenant>"``
  (:meth:`TestUpstream.revision_for`), so an answer that crosses tenants shows
- ``delay``: seconds to wait before answering
- ``token_interval``: seconds between two streamed chunks
- ``fail_status`` / ``fail_times``: answer with that status (OpenAI error body), ``fail_times``
  times or, when ``None``, until changed
- ``stall``: wait before answering until :meth:`TestUpstream.release` (or reset/stop)
- ``stall_after``: stream that many content chunks, then wait until released
- ``cut_after``: stream that many content chunks, then close the connection without ``[DONE]``
  (a JSON answer is cut half way through its body)
- ``error_after``: stream that many chunks, then an error event and ``[DONE]`` (as vLLM reports
  a failure in the middle of a stream)
- ``fault_rate``: the share of requests the fault controls above apply to (default 1.0: all);
  the others are answered as if no fault were set (``fault_seed`` makes the draw repeatable)

It counts calls per path (``calls``) and records every request (``requests``: path, headers,
parsed body, ``faults``: the fault controls that acted on it, and ``client_gone``: whether the
client has closed the connection), so tests can check what the sidecar forwarded, tell an error
the upstream caused from one the sidecar caused, and see a request the sidecar aborted.

Run it alone: ``python -m tests.upstream --port 8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import random
import re
import struct
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict

DEFAULT_MODEL = "test-model"
EMBEDDING_DIMENSIONS = 16
#: fields that only change how the answer travels, not what it says (``cache_salt`` only
#: separates vLLM's prefix caches)
TRANSPORT_FIELDS = frozenset({"stream", "stream_options", "cache_salt"})
CONTROL_FIELDS = ("revision", "delay", "token_interval", "fail_status", "fail_times", "stall", "stall_after", "cut_after",
                  "error_after", "fault_rate")


# --------------------------------------------------------------------------- the answers


def _same_number(value: Any) -> Any:
    """``0.0`` and ``0`` mean the same to a model: write integral floats as ints, everywhere."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _same_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_same_number(v) for v in value]
    return value


def request_digest(body: Mapping[str, Any], revision: str) -> str:
    """sha256 hex of the canonical body (transport fields left out) and the revision."""
    meaningful = {k: _same_number(v) for k, v in body.items() if k not in TRANSPORT_FIELDS}
    canonical = json.dumps(meaningful, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{revision}\n{canonical}".encode()).hexdigest()


def _text_of(content: Any) -> str:
    """Text of a message content: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def last_user_message(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _choice_suffix(index: int) -> str:
    return f" (choice {index})" if index else ""


def chat_content(body: Mapping[str, Any], revision: str = "A", index: int = 0) -> str:
    """The full (untruncated) text the upstream answers a chat request with."""
    digest = request_digest(body, revision)[:12]
    return f"[rev {revision}] answer {digest} to: {last_user_message(body.get('messages', []))}{_choice_suffix(index)}"


def completion_text(body: Mapping[str, Any], revision: str = "A", index: int = 0) -> str:
    prompt = body.get("prompt", "")
    shown = prompt if isinstance(prompt, str) else json.dumps(prompt)
    digest = request_digest(body, revision)[:12]
    return f"[rev {revision}] completion {digest} for: {shown}{_choice_suffix(index)}"


def split_tokens(text: str) -> list[str]:
    """The streamed pieces of a text: one word with its trailing space each (a 'token')."""
    return re.findall(r"\s*\S+\s*", text) or [text]


def limited(text: str, max_tokens: int | None) -> tuple[str, str]:
    """``(text cut to max_tokens pieces, finish_reason)``."""
    pieces = split_tokens(text)
    if max_tokens is not None and 0 < max_tokens < len(pieces):
        return "".join(pieces[:max_tokens]), "length"
    return text, "stop"


def expected_chat(body: Mapping[str, Any], revision: str = "A", index: int = 0) -> tuple[str, str]:
    """``(content, finish_reason)`` of a plain (tool-less) chat answer, honouring max_tokens."""
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    return limited(chat_content(body, revision, index), max_tokens)


def expected_completion(body: Mapping[str, Any], revision: str = "A", index: int = 0) -> tuple[str, str]:
    return limited(completion_text(body, revision, index), body.get("max_tokens"))


def wants_tool_call(body: Mapping[str, Any]) -> bool:
    return bool(body.get("tools")) and body.get("tool_choice") != "none"


def tools_problem(body: Mapping[str, Any]) -> str | None:
    """Why ``tools`` / ``tool_choice`` are malformed (a real server answers 400), or None."""
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(
            isinstance(tool, dict) and isinstance(tool.get("function"), dict)
            and isinstance(tool["function"].get("name"), str) for tool in tools)):
        return "tools"
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and not isinstance(choice.get("function", {}), dict):
        return "tool_choice"
    return None


def expected_tool_call(body: Mapping[str, Any], revision: str = "A") -> dict[str, Any]:
    """The tool call the upstream answers a request with tools with (OpenAI message shape)."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("function", {}).get("name"):
        name = choice["function"]["name"]
    else:
        name = body["tools"][0]["function"]["name"]
    digest = request_digest(body, revision)
    arguments = json.dumps({"query": last_user_message(body.get("messages", [])), "answer": digest[:12]})
    return {"id": f"call_{digest[:16]}", "type": "function", "function": {"name": name, "arguments": arguments}}


def count_tokens(text: str) -> int:
    return len(split_tokens(text)) if text else 0


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """A realistic-looking prompt size: words of every message plus 4 per message of framing."""
    if "messages" in body:
        messages = body.get("messages") or []
        return sum(count_tokens(_text_of(m.get("content"))) + 4 for m in messages) + 3
    prompt = body.get("prompt", "")
    return count_tokens(prompt if isinstance(prompt, str) else json.dumps(prompt))


def embedding_vector(model: str, text: str, revision: str = "A", dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic unit vector derived from a hash of (revision, model, text)."""
    raw = b""
    counter = 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.sha256(f"{revision}\n{model}\n{counter}\n{text}".encode()).digest()
        counter += 1
    ints = struct.unpack(f"<{dimensions}i", raw[: 4 * dimensions])
    values = [i / 2**31 for i in ints]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [float(struct.unpack("<f", struct.pack("<f", v / norm))[0]) for v in values]


# --------------------------------------------------------------------------- the server


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: CIMultiDict[str]
    body: Any  # parsed JSON, or the raw text when it was not JSON, or None without a body
    #: the fault controls that acted on this request (``"delay"``, ``"fail_status"``, ``"cut_after"``, ...)
    faults: list[str] = field(default_factory=list)
    #: whether the fault controls apply to this request at all (see ``fault_rate``)
    faultable: bool = True
    #: the server side of the request's connection
    protocol: Any = field(default=None, repr=False)

    @property
    def client_gone(self) -> bool:
        """The client closed the request's connection (as vLLM sees a client abort)."""
        return self.protocol is not None and self.protocol.transport is None


@dataclass
class TestUpstream:
    """The upstream.  ``await start()`` / ``await stop()``, or ``async with TestUpstream() as up``."""

    __test__ = False  # not a pytest test class

    host: str = "127.0.0.1"
    port: int = 0
    model: str = DEFAULT_MODEL
    revision: str = "A"
    tenant_header: str | None = None
    delay: float = 0.0
    token_interval: float = 0.0
    fail_status: int | None = None
    fail_times: int | None = None
    stall: bool = False
    stall_after: int | None = None
    cut_after: int | None = None
    error_after: int | None = None
    fault_rate: float = 1.0
    fault_seed: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    requests: list[RecordedRequest] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)
    _released: asyncio.Event | None = field(default=None, repr=False)
    _draw: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self._draw.seed(self.fault_seed)

    # ---- lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Self:
        self._released = asyncio.Event()
        self._runner = web.AppRunner(self.make_app(), shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = self._runner.addresses
        self.port = sockets[0][1]
        return self

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def reset(self) -> None:
        """Back to a healthy, fast upstream with revision A and no history."""
        self.release()
        self._released = asyncio.Event()
        self.revision, self.delay, self.token_interval = "A", 0.0, 0.0
        self.fail_status = self.fail_times = self.stall_after = self.cut_after = self.error_after = None
        self.stall = False
        self.fault_rate = 1.0
        self.calls.clear()
        self.requests.clear()

    def release(self) -> None:
        """Let every stalled request go on (and make later stalls pass at once until reset)."""
        if self._released is not None:
            self._released.set()

    # ---- inspection

    def revision_for(self, tenant: str | None) -> str:
        """The revision a request of ``tenant`` is answered with (see ``tenant_header``)."""
        return f"{self.revision}/{tenant}" if self.tenant_header and tenant else self.revision

    def _revision(self, request: web.Request) -> str:
        return self.revision_for(request.headers.get(self.tenant_header) if self.tenant_header else None)

    def last(self, path: str | None = None) -> RecordedRequest:
        """The last request seen (on ``path`` if given)."""
        for recorded in reversed(self.requests):
            if path is None or recorded.path == path:
                return recorded
        raise LookupError(f"no request seen on {path or 'any path'}")

    # ---- the app

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)
        app.router.add_post("/_control", self._control)
        app.router.add_post("/_control/reset", self._control_reset)
        app.router.add_get("/_control/calls", self._control_calls)
        app.router.add_route("*", "/v1/{rest:.*}", self._unknown)
        return app

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        self.calls[request.path] += 1
        faultable = self.fault_rate >= 1.0 or self._draw.random() < self.fault_rate
        recorded = RecordedRequest(request.method, request.path, CIMultiDict(request.headers), body,
                                   faultable=faultable, protocol=request.protocol)
        self.requests.append(recorded)
        request[_RECORDED] = recorded
        return body

    @staticmethod
    def _fault(request: web.Request, control: str, value: Any) -> bool:
        """Whether the fault ``control`` (set to ``value``) acts on this request; noted if it does."""
        recorded: RecordedRequest = request[_RECORDED]
        if value is None or value is False or value == 0 or not recorded.faultable:
            return False
        if control not in recorded.faults:
            recorded.faults.append(control)
        return True

    async def _wait_released(self) -> None:
        assert self._released is not None
        await self._released.wait()

    async def _prologue(self, request: web.Request) -> tuple[Any, web.Response | None]:
        """Record, apply delay/stall/failure; return (body, an early response or None)."""
        body = await self._record(request)
        if self._fault(request, "delay", self.delay):
            await asyncio.sleep(self.delay)
        if self._fault(request, "stall", self.stall):
            await self._wait_released()
        if (self.fail_status is not None and (self.fail_times is None or self.fail_times > 0)
                and self._fault(request, "fail_status", self.fail_status)):
            if self.fail_times is not None:
                self.fail_times -= 1
            return body, error_response(self.fail_status, f"test upstream told to fail with {self.fail_status}", "server_error")
        if not isinstance(body, dict):
            return body, error_response(400, "body must be a JSON object", "invalid_request_error")
        return body, None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._prologue(request)
        if early is not None:
            return early
        if not body.get("messages"):
            return error_response(400, "'messages' is required", "invalid_request_error", param="messages")
        if (problem := tools_problem(body)) is not None:
            return error_response(400, f"'{problem}' is malformed", "invalid_request_error", param=problem)
        if body.get("stream"):
            return await self._stream(request, body, chat_chunks(body, self._revision(request), self._created()))
        return await self._json(request, chat_completion(body, self._revision(request), self._created()))

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._prologue(request)
        if early is not None:
            return early
        if "prompt" not in body:
            return error_response(400, "'prompt' is required", "invalid_request_error", param="prompt")
        if body.get("stream"):
            return await self._stream(request, body, completion_chunks(body, self._revision(request), self._created()))
        return await self._json(request, text_completion(body, self._revision(request), self._created()))

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._prologue(request)
        if early is not None:
            return early
        if "input" not in body:
            return error_response(400, "'input' is required", "invalid_request_error", param="input")
        return await self._json(request, embeddings(body, self._revision(request)))

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"object": "list", "data": [self._model_card()]})

    async def _model(self, request: web.Request) -> web.Response:
        await self._record(request)
        if request.match_info["model"] != self.model:
            return error_response(404, f"The model '{request.match_info['model']}' does not exist", "invalid_request_error", code="model_not_found")
        return web.json_response(self._model_card())

    async def _unknown(self, request: web.Request) -> web.Response:
        await self._record(request)
        return error_response(404, f"no route {request.method} {request.path} on the test upstream", "invalid_request_error")

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model, "object": "model", "created": 1700000000, "owned_by": "llmcache-tests"}

    def _created(self) -> int:
        return int(time.time())

    async def _json(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        data = json.dumps(payload).encode()
        if self.cut_after is None or not self._fault(request, "cut_after", True):
            return web.Response(body=data, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        _drop_connection(request)
        return response

    async def _stream(self, request: web.Request, body: dict[str, Any], chunks: Iterator[dict[str, Any]]) -> web.StreamResponse:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        sent = 0
        for chunk in chunks:
            is_usage = "usage" in chunk and not chunk["choices"]
            if is_usage and not include_usage:
                continue
            if include_usage and not is_usage:
                chunk = {**chunk, "usage": None}
            if sent and self._fault(request, "token_interval", self.token_interval):
                await asyncio.sleep(self.token_interval)
            if self.cut_after is not None and sent >= self.cut_after and self._fault(request, "cut_after", True):
                _drop_connection(request)
                return response
            if self.stall_after is not None and sent >= self.stall_after and self._fault(request, "stall_after", True):
                await self._wait_released()
            if self.error_after is not None and sent >= self.error_after and self._fault(request, "error_after", True):
                await response.write(sse({"error": {"object": "error", "message": "test upstream failed mid-stream",
                                                    "type": "InternalServerError", "param": None, "code": 500}}))
                break
            await response.write(sse(chunk))
            sent += 1
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # ---- control endpoint (for an upstream in another process)

    async def _control(self, request: web.Request) -> web.Response:
        changes = await request.json()
        unknown = set(changes) - set(CONTROL_FIELDS)
        if unknown:
            return error_response(400, f"unknown controls {sorted(unknown)}", "invalid_request_error")
        for name, value in changes.items():
            setattr(self, name, value)
        if not self.stall:
            self.release()
            self._released = asyncio.Event()
        return web.json_response({name: getattr(self, name) for name in CONTROL_FIELDS})

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    async def _control_calls(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.calls))


#: where a request's :class:`RecordedRequest` is kept while it is answered
_RECORDED = web.RequestKey("recorded", RecordedRequest)


def _drop_connection(request: web.Request) -> None:
    """Close the TCP connection now: the client sees a truncated body (no terminating chunk)."""
    assert request.transport is not None
    request.transport.close()


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def error_response(status: int, message: str, kind: str, *, param: str | None = None, code: Any = None) -> web.Response:
    """An OpenAI-style error body."""
    error = {"message": message, "type": kind, "param": param, "code": code if code is not None else status}
    return web.json_response({"error": error}, status=status)


# --------------------------------------------------------------------------- payloads


def _usage(body: Mapping[str, Any], completion: int) -> dict[str, int]:
    prompt = prompt_tokens(body)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _choices(body: Mapping[str, Any]) -> range:
    return range(max(1, int(body.get("n") or 1)))


def token_logprob(piece: str) -> dict[str, Any]:
    """A made-up but deterministic log probability entry for one streamed piece."""
    return {"token": piece, "logprob": -round((len(piece) % 7) / 10, 1), "bytes": list(piece.encode()), "top_logprobs": []}


def expected_logprobs(text: str) -> dict[str, Any]:
    """The ``logprobs`` of a choice whose request asked for them (``logprobs: true``)."""
    return {"content": [token_logprob(piece) for piece in split_tokens(text)], "refusal": None}


def chat_completion(body: Mapping[str, Any], revision: str, created: int) -> dict[str, Any]:
    model = body.get("model", DEFAULT_MODEL)
    digest = request_digest(body, revision)
    choices = []
    completion = 0
    for index in _choices(body):
        message: dict[str, Any]
        logprobs = None
        if wants_tool_call(body):
            call = expected_tool_call(body, revision)
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
            completion += count_tokens(call["function"]["arguments"])
        else:
            content, finish = expected_chat(body, revision, index)
            message = {"role": "assistant", "content": content}
            completion += count_tokens(content)
            if body.get("logprobs"):
                logprobs = expected_logprobs(content)
        choices.append({"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish})
    return {
        "id": f"chatcmpl-{digest[:24]}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": f"fp_rev{revision}",
        "choices": choices,
        "usage": _usage(body, completion),
    }


def chat_chunks(body: Mapping[str, Any], revision: str, created: int) -> Iterator[dict[str, Any]]:
    """The chunks of a streamed chat answer, the final usage chunk last (always produced;
    the server drops it unless ``stream_options.include_usage``)."""
    digest = request_digest(body, revision)
    base = {"id": f"chatcmpl-{digest[:24]}", "object": "chat.completion.chunk", "created": created,
            "model": body.get("model", DEFAULT_MODEL), "system_fingerprint": f"fp_rev{revision}"}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    completion = 0
    for index in _choices(body):
        if wants_tool_call(body):
            call = expected_tool_call(body, revision)
            pieces = split_tokens(call["function"]["arguments"])
            yield chunk(index, {"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}]})
            for piece in pieces:
                yield chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            yield chunk(index, {}, "tool_calls")
            completion += len(pieces)
        else:
            content, finish = expected_chat(body, revision, index)
            yield chunk(index, {"role": "assistant", "content": ""})
            for piece in split_tokens(content):
                logprobs = {"content": [token_logprob(piece)], "refusal": None} if body.get("logprobs") else None
                yield chunk(index, {"content": piece}, logprobs=logprobs)
            yield chunk(index, {}, finish)
            completion += count_tokens(content)
    yield {**base, "choices": [], "usage": _usage(body, completion)}


def text_completion(body: Mapping[str, Any], revision: str, created: int) -> dict[str, Any]:
    digest = request_digest(body, revision)
    choices = []
    completion = 0
    for index in _choices(body):
        text, finish = expected_completion(body, revision, index)
        choices.append({"index": index, "text": text, "logprobs": None, "finish_reason": finish})
        completion += count_tokens(text)
    return {"id": f"cmpl-{digest[:24]}", "object": "text_completion", "created": created,
            "model": body.get("model", DEFAULT_MODEL), "choices": choices, "usage": _usage(body, completion)}


def completion_chunks(body: Mapping[str, Any], revision: str, created: int) -> Iterator[dict[str, Any]]:
    digest = request_digest(body, revision)
    base = {"id": f"cmpl-{digest[:24]}", "object": "text_completion", "created": created, "model": body.get("model", DEFAULT_MODEL)}
    completion = 0
    for index in _choices(body):
        text, finish = expected_completion(body, revision, index)
        pieces = split_tokens(text)
        for number, piece in enumerate(pieces):
            last = number == len(pieces) - 1
            yield {**base, "choices": [{"index": index, "text": piece, "logprobs": None, "finish_reason": finish if last else None}]}
        completion += len(pieces)
    yield {**base, "choices": [], "usage": _usage(body, completion)}


def _inputs(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        return [json.dumps(raw)]  # one token-id list
    return [x if isinstance(x, str) else json.dumps(x) for x in raw]


def embeddings(body: Mapping[str, Any], revision: str) -> dict[str, Any]:
    model = body.get("model", DEFAULT_MODEL)
    dimensions = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
    data = []
    tokens = 0
    for index, text in enumerate(_inputs(body["input"])):
        vector = embedding_vector(model, text, revision, dimensions)
        encoded: Any = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens += count_tokens(text)
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# --------------------------------------------------------------------------- standalone


async def _serve_forever(host: str, port: int) -> None:
    async with TestUpstream(host=host, port=port) as upstream:
        print(f"test upstream listening on {upstream.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve_forever(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
