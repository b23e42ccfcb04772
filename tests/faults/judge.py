"""Sending one call through the official openai client, and judging what came back.

A call ends in one of four verdicts:

- ``ok``: a complete answer that is right (see :meth:`Workload.acceptable`);
- ``wrong``: a complete answer that is not what the upstream says to that request;
- ``upstream``: an error the upstream caused itself: the upstream's request log says a fault
  acted on this very call (found by its ``X-Request-Id``) and the error is what that fault
  produces (its own 5xx passed through, a 504 after it stalled past the timeout, a cut or an
  error event in the middle of its answer);
- ``ours``: any other error (a sidecar 5xx, a reset, a truncated answer nobody cut...).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import openai

try:  # the transport under the openai client: httpx2 in openai >= 3, httpx before
    import httpx2 as http_transport
except ImportError:  # pragma: no cover - older openai
    import httpx as http_transport  # type: ignore[no-redef]

from tests.faults.workload import REQUEST_ID_HEADER, Call, Workload


@dataclass
class Outcome:
    call: Call
    #: the phase running when the call was sent
    phase: str
    started: float
    ended: float
    #: the ``X-LLMCache`` header (None when no response head arrived)
    cache: str | None = None
    content: str | None = None
    finish: str | None = None
    status: int | None = None
    #: the error code of an OpenAI-style error body (``upstream_timeout``, ``sidecar_error``...)
    code: str | None = None
    #: what went wrong, for the report (None: a complete answer arrived)
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and self.finish is not None


async def send(client: openai.AsyncOpenAI, call: Call, phase: str) -> Outcome:
    """Send ``call`` (with its id in ``X-Request-Id``); never raises for a failed call."""
    outcome = Outcome(call, phase, time.monotonic(), 0.0)
    endpoint = client.chat.completions if call.kind == "chat" else client.completions
    body = dict(call.body)
    if call.stream:
        body["stream_options"] = {"include_usage": True}
    try:
        raw = await endpoint.with_raw_response.create(stream=call.stream, extra_headers={REQUEST_ID_HEADER: call.id},
                                                      **body)
        outcome.cache = raw.headers.get("x-llmcache")
        parsed: Any = raw.parse()  # a completion, or a stream of chunks (chat or text)
        if call.stream:
            await _read_stream(outcome, parsed)
        else:
            choice = parsed.choices[0]
            outcome.content = choice.message.content if call.kind == "chat" else choice.text
            outcome.finish = choice.finish_reason
        if outcome.finish is None:
            outcome.error = "the answer ended without a finish_reason (truncated)"
    except openai.APIStatusError as exc:
        error = exc.body if isinstance(exc.body, Mapping) else {}
        outcome.status, outcome.code = exc.status_code, _text(error.get("code"))
        outcome.cache = exc.response.headers.get("x-llmcache")
        outcome.error = f"HTTP {exc.status_code}: {error.get('message', exc.message)}"[:300]
    except (openai.APIError, http_transport.HTTPError) as exc:  # a reset, a cut stream, an error event
        outcome.error = f"{type(exc).__name__}: {exc}"[:300]
    outcome.ended = time.monotonic()
    return outcome


async def _read_stream(outcome: Outcome, stream: Any) -> None:
    """The first choice's text and finish reason, from the chunks (chat deltas or text pieces)."""
    parts: list[str] = []
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta.content if outcome.call.kind == "chat" else choice.text
            parts.append(delta or "")
            outcome.finish = choice.finish_reason or outcome.finish
    outcome.content = "".join(parts)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def upstream_caused(outcome: Outcome, faults: list[str]) -> bool:
    """Whether ``outcome``'s error is what a fault the upstream applied to this call produces."""
    error = outcome.error or ""
    if "fail_status" in faults and outcome.status is not None and outcome.status >= 500 \
            and "test upstream told to fail" in error:
        return True
    if "delay" in faults and outcome.status == 504 and outcome.code == "upstream_timeout":
        return True
    if "cut_after" in faults and (outcome.status is None or (outcome.status == 502
                                                             and outcome.code == "upstream_unreachable")):
        return True
    return "error_after" in faults and outcome.status is None and "failed mid-stream" in error


def verdict(outcome: Outcome, faults: list[str], workload: Workload) -> str:
    """``ok`` | ``wrong`` | ``upstream`` | ``ours`` (see the module docstring)."""
    if outcome.complete:
        right = workload.acceptable(outcome.call, outcome.cache)
        return "ok" if (outcome.content, outcome.finish) in right else "wrong"
    return "upstream" if upstream_caused(outcome, faults) else "ours"
