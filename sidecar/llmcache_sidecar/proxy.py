"""The cacheable endpoints: lookup (exact, then semantic), else forward and write back.

Results (``X-LLMCache``): ``hit-exact`` / ``hit-semantic`` (served from the cache), ``miss``
(forwarded; the answer is stored unless ``Cache-Control: no-store``), ``bypass`` (forwarded
without the cache: temperature above the limit, ``n > 1``, or a cache backend in trouble).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from llmcache_sidecar import state
from llmcache_sidecar.entry import CorruptEntry, Entry
from llmcache_sidecar.errors import InvalidRequest, invalid_request_response
from llmcache_sidecar.keys import Kind, ParsedRequest
from llmcache_sidecar.sse import DONE, EventSplitter, StreamAssembler, event_data
from llmcache_sidecar.tiers.base import CacheRequest
from llmcache_sidecar.upstream import (
    UPSTREAM_ERRORS, cut_client_connection, request_headers, response_headers, unreachable_response,
)

log = logging.getLogger(__name__)

HEADER = "X-LLMCache"
SIMILARITY_HEADER = "X-LLMCache-Similarity"

#: the field of a complete answer, per endpoint (an answer without it is not stored)
_ANSWER_FIELD: dict[str, str] = {"chat": "choices", "completions": "choices", "embeddings": "data"}


@dataclass(slots=True)
class Lookup:
    """Outcome of the cache lookup of one request."""

    result: str
    entry: Entry | None = None
    similarity: float | None = None
    #: the exact tier can take the answer (it answered, or was not asked and is not backing off)
    exact_ok: bool = True


def handler(kind: Kind) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await cacheable(request, kind)

    handle.__name__ = f"handle_{kind}"
    return handle


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise InvalidRequest(f"the request body is larger than {limit} bytes", code="request_too_large", status=413)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise InvalidRequest(f"the request body is larger than {limit} bytes", code="request_too_large",
                             status=413) from None


async def cacheable(request: web.Request, kind: Kind) -> web.StreamResponse:
    app = request.app
    metrics = app[state.METRICS]
    semantic = app[state.SEMANTIC_TIER]
    try:
        raw = await read_body(request, app[state.SETTINGS].max_body_bytes)
        parsed = app[state.KEYS].parse(kind, raw, request.path_qs, request.headers, app[state.REVISION].active,
                                       semantic=semantic is not None)
    except InvalidRequest as exc:
        metrics.result["invalid"].inc()
        return invalid_request_response(exc)
    if parsed.cache is None:
        return await forward(request, parsed, raw, "bypass", store=False)
    found, generation = await lookup_exact(app, parsed, parsed.cache)
    if found is None:
        if app[state.SETTINGS].speculative_upstream:
            return await speculative(request, parsed, raw, parsed.cache, generation)
        found = await lookup_semantic(app, parsed, parsed.cache)
    if found.entry is not None:
        return serve_hit(app, parsed, found)
    store = found.exact_ok and not parsed.control.no_store
    return await forward(request, parsed, raw, found.result, store=store, generation=generation)


async def lookup_exact(app: web.Application, parsed: ParsedRequest,
                       cache: CacheRequest) -> tuple[Lookup | None, int | None]:
    """The exact tier's outcome (None when the request goes on to the semantic tier), and the
    cache's invalidation generation read with it, before any upstream call (None when the tier
    is backing off): an answer is kept only if no invalidation began since."""
    health = app[state.EXACT_HEALTH]
    if not health.available():
        return Lookup("bypass", exact_ok=False), None
    metrics = app[state.METRICS]
    tier = app[state.EXACT_TIER]
    looked_up = app[state.SETTINGS].exact_enabled and not parsed.control.no_cache
    started = time.perf_counter()
    try:
        if looked_up:
            value, generation = await tier.lookup(cache.exact_key, cache.cache_name)
        else:
            value, generation = None, await tier.generation(cache.cache_name)
    except Exception as exc:  # noqa: BLE001 - any backend trouble means pass through
        health.failed(exc)
        log.warning("exact tier lookup failed, passing through: %s", exc)
        return Lookup("bypass", exact_ok=False), None
    health.succeeded()
    if looked_up:
        metrics.lookup_exact.observe(time.perf_counter() - started)
    if parsed.control.no_cache:
        return Lookup("miss"), generation
    entry = usable_entry(value, parsed)
    if entry is not None:
        return Lookup("hit-exact", entry), generation
    if app[state.SEMANTIC_TIER] is None or cache.query is None:
        return Lookup("miss"), generation
    return None, generation


async def lookup_semantic(app: web.Application, parsed: ParsedRequest, cache: CacheRequest) -> Lookup:
    """The semantic tier's outcome, for a request :func:`lookup_exact` sent on to it."""
    semantic = app[state.SEMANTIC_TIER]
    assert semantic is not None
    metrics = app[state.METRICS]
    health = app[state.EXACT_HEALTH]
    tier = app[state.EXACT_TIER]
    semantic_health = app[state.SEMANTIC_HEALTH]
    if not semantic_health.available():
        return Lookup("bypass")
    started = time.perf_counter()
    try:
        match = await semantic.lookup(cache)
    except Exception as exc:  # noqa: BLE001
        semantic_failed(app, exc)
        return Lookup("bypass")
    semantic_health.succeeded()
    metrics.lookup_semantic.observe(time.perf_counter() - started)
    if match is None or not match.key.startswith(_key_prefix(cache)):
        return Lookup("miss")
    try:
        value = await tier.get(match.key)
    except Exception as exc:  # noqa: BLE001
        health.failed(exc)
        return Lookup("bypass", exact_ok=False)
    entry = usable_entry(value, parsed)
    if entry is None:
        return Lookup("miss")
    return Lookup("hit-semantic", entry, similarity=match.similarity)


def _key_prefix(cache: CacheRequest) -> str:
    """A semantic match may only point into the request's own cache, revision and tenant."""
    return cache.exact_key[: cache.exact_key.rindex(":") + 1]


def semantic_failed(app: web.Application, exc: BaseException) -> None:
    app[state.SEMANTIC_HEALTH].failed(exc)
    backend = getattr(exc, "backend", "milvus")
    app[state.METRICS].backend_errors_total.labels(backend=backend).inc()
    log.warning("semantic tier failed, passing through: %s", exc)


def usable_entry(value: bytes | None, parsed: ParsedRequest) -> Entry | None:
    """The stored entry if it can answer this request (right kind, young enough)."""
    if value is None:
        return None
    try:
        entry = Entry.decode(value)
    except CorruptEntry:
        return None
    if entry.kind != parsed.kind:
        return None
    max_age = parsed.control.max_age
    if max_age is not None and entry.age(time.time()) > max_age:
        return None
    return entry


def serve_hit(app: web.Application, parsed: ParsedRequest, found: Lookup) -> web.Response:
    entry = found.entry
    assert entry is not None
    headers = {HEADER: found.result, "Age": str(int(entry.age(time.time())))}
    if found.similarity is not None:
        headers[SIMILARITY_HEADER] = f"{found.similarity:.4f}"
    record(app, found.result, entry.tokens)
    if parsed.stream:
        headers["Cache-Control"] = "no-cache"
        return web.Response(body=entry.as_stream(parsed.include_usage), content_type="text/event-stream",
                            headers=headers)
    return web.Response(body=entry.body, content_type="application/json", headers=headers)


def record(app: web.Application, result: str, tokens_saved: int = 0) -> None:
    metrics = app[state.METRICS]
    metrics.result[result].inc()
    if tokens_saved:
        metrics.tokens_saved_total.inc(tokens_saved)
    app[state.STATS].record(result, tokens_saved)


def with_usage_chunk(parsed: ParsedRequest, raw: bytes, store: bool) -> bytes | None:
    """The body to send upstream instead of the client's when a stream that will be stored should
    bring its usage chunk (the entry's token count; hidden from a client that did not ask for it);
    None to send the client's bytes."""
    if not (store and parsed.stream and not parsed.include_usage):
        return None
    options = parsed.body.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    options["include_usage"] = True
    return orjson.dumps({**parsed.body, "stream_options": options})


def salted(body: bytes, salt: str | None) -> bytes:
    """``body`` (a JSON object, as the client wrote it) with ``"cache_salt": salt`` spliced in
    first, so the client's own bytes (numbers, nesting) reach the upstream unchanged."""
    if salt is None:
        return body
    start = body.index(b"{") + 1
    return body[:start] + b'"cache_salt":"' + salt.encode() + b'",' + body[start:]


@dataclass(slots=True)
class Sent:
    """An upstream call whose answer (status and headers) has arrived."""

    response: aiohttp.ClientResponse
    #: the request asked for a usage chunk the client did not ask for (hidden from the client)
    hide_usage: bool
    #: ``time.perf_counter()`` when the call was started
    started: float


async def send(request: web.Request, parsed: ParsedRequest, raw: bytes, *, store: bool) -> Sent:
    """Send the request upstream and wait for the head of its answer; raises ``UPSTREAM_ERRORS``.

    The body asks for the usage chunk when the answer will be stored (:func:`with_usage_chunk`)
    and carries the cache salt; an upstream that refuses either with 400 gets the client's bytes."""
    app = request.app
    session = app[state.UPSTREAM].session
    url = app[state.SETTINGS].upstream_url + request.path_qs
    started = time.perf_counter()
    forwarded_headers = request_headers(request.headers, decoded=True)
    forwarded_headers.setdefault("Content-Type", "application/json")
    amended = with_usage_chunk(parsed, raw, store)
    sent = salted(amended or raw, parsed.cache_salt)
    upstream = await session.post(url, data=sent, headers=forwarded_headers)
    if sent is not raw and upstream.status == 400:
        # an upstream that does not know stream_options or cache_salt: the cache must not break the call
        upstream.release()
        amended = None
        upstream = await session.post(url, data=raw, headers=forwarded_headers)
    return Sent(upstream, hide_usage=amended is not None, started=started)


async def forward(request: web.Request, parsed: ParsedRequest, raw: bytes, result: str, *,
                  store: bool, generation: int | None = None) -> web.StreamResponse:
    record(request.app, result)
    try:
        sent = await send(request, parsed, raw, store=store)
    except UPSTREAM_ERRORS as exc:
        return unreachable_response(exc, {HEADER: result})
    return await relay(request, parsed, sent, result, store=store, generation=generation)


async def speculative(request: web.Request, parsed: ParsedRequest, raw: bytes,
                      cache: CacheRequest, generation: int | None) -> web.StreamResponse:
    """The semantic lookup and the upstream call at once (``speculative_upstream``), so a miss
    does not wait for the query's embedding before it goes upstream.

    On a semantic hit the call is aborted: its connection is closed (vLLM aborts a request whose
    client went away), counted in ``llmcache_speculative_aborted_total``.  The upstream has then
    received a request for nothing: a prefill's worth of GPU on vLLM, the input tokens billed on a
    paid API.  That is why it is off by default.  Otherwise the answer already on its way is
    relayed as :func:`forward` relays it.  The call is sent as one to be stored (unless
    ``no-store``) before the outcome is known; if that outcome is an exact tier failure
    (``bypass``), :func:`store_answer` skips the tier while it backs off."""
    app = request.app
    store = not parsed.control.no_store
    call = asyncio.create_task(send(request, parsed, raw, store=store), name="llmcache-speculative-upstream")
    try:
        found = await lookup_semantic(app, parsed, cache)
    except BaseException:
        await abort(call)
        raise
    if found.entry is not None:
        await abort(call)
        app[state.METRICS].speculative_aborted_total.inc()
        return serve_hit(app, parsed, found)
    record(app, found.result)
    try:
        sent = await call
    except UPSTREAM_ERRORS as exc:
        return unreachable_response(exc, {HEADER: found.result})
    return await relay(request, parsed, sent, found.result, store=store, generation=generation)


async def abort(call: asyncio.Task[Sent]) -> None:
    """Stop an upstream call and close its connection (never back to the pool half-read), so the
    upstream sees its client go away; a failure of the call is of no interest any more."""
    call.cancel()  # a call still waiting for its answer closes its connection as it is cancelled
    await asyncio.wait([call])
    if not call.cancelled() and call.exception() is None:
        call.result().response.close()


async def relay(request: web.Request, parsed: ParsedRequest, sent: Sent, result: str, *,
                store: bool, generation: int | None) -> web.StreamResponse:
    """Pass the upstream's answer on (a stream as it arrives, else whole) and store it if it is
    a complete answer and ``store`` (kept only if the cache's invalidation ``generation`` is
    still the one read before the call)."""
    app = request.app
    upstream = sent.response
    try:
        if upstream.status == 200 and upstream.content_type == "text/event-stream":
            return await relay_stream(request, parsed, upstream, result, store=store, generation=generation,
                                      hide_usage=sent.hide_usage, started=sent.started)
        try:
            body = await upstream.read()
        except UPSTREAM_ERRORS as exc:
            return unreachable_response(exc, {HEADER: result})
        app[state.METRICS].upstream_seconds.observe(time.perf_counter() - sent.started)
        out = response_headers(upstream.headers, decoded=True)
        out[HEADER] = result
        response = web.Response(status=upstream.status, reason=upstream.reason, body=body, headers=out)
        answer = complete_answer(body, parsed.kind) if store and upstream.status == 200 else None
        if answer is not None:
            await store_answer(app, parsed, answer, body, generation,
                               send_first=functools.partial(send_now, request, response))
        return response
    finally:
        upstream.release()


async def send_now(request: web.Request, response: web.Response) -> None:
    """Send a whole answer before the handler returns (the store goes on after it); a client that
    left early does not stop the store."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        log.debug("the client left before its answer was sent; storing it anyway")


def complete_answer(body: bytes, kind: str) -> dict[str, Any] | None:
    """The decoded answer if it is one worth storing, else None."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) and is_complete(answer, kind) else None


def is_complete(answer: dict[str, Any], kind: str) -> bool:
    """A whole answer: its results are there and (completions) every choice says why it ended."""
    items = answer.get(_ANSWER_FIELD[kind])
    if not isinstance(items, list) or not items or answer.get("error") is not None:
        return False
    if kind == "embeddings":
        return True
    return all(isinstance(choice, dict) and choice.get("finish_reason") is not None for choice in items)


async def relay_stream(request: web.Request, parsed: ParsedRequest, upstream: aiohttp.ClientResponse, result: str,
                       *, store: bool, generation: int | None, hide_usage: bool,
                       started: float) -> web.StreamResponse:
    """Forward a streamed answer event by event as it arrives; store it only if it ended with
    ``[DONE]`` (the store happens before ``[DONE]`` is passed on, so a client that saw the end of
    the stream finds the entry)."""
    app = request.app
    out = response_headers(upstream.headers, decoded=True)
    out[HEADER] = result
    response = web.StreamResponse(status=200, reason=upstream.reason, headers=out)
    await response.prepare(request)
    splitter = EventSplitter()
    assembler = StreamAssembler(parsed.kind)
    storable = store
    try:
        async for data in upstream.content.iter_any():
            if not store:
                await response.write(data)
                continue
            forwarded: list[bytes] = []
            for event in splitter.feed(data):
                payload = event_data(event)
                if payload == DONE:
                    if forwarded:
                        await response.write(b"".join(forwarded))
                        forwarded = []
                    if storable:
                        answer = assembler.result()
                        if is_complete(answer, parsed.kind):
                            await store_answer(app, parsed, answer, None, generation)
                        storable = False
                elif payload is not None and storable:
                    try:
                        chunk = orjson.loads(payload)
                        if not isinstance(chunk, dict) or chunk.get("error") is not None:
                            # vLLM reports a failure mid-stream as an error event, then [DONE]
                            raise ValueError("an error event")
                        assembler.add(chunk)
                    except (ValueError, AttributeError, TypeError):
                        storable = False
                    else:
                        if hide_usage and not chunk.get("choices") and chunk.get("usage"):
                            continue
                forwarded.append(event + b"\n\n")
            if forwarded:
                await response.write(b"".join(forwarded))
    except UPSTREAM_ERRORS:
        cut_client_connection(request)
        return response
    finally:
        app[state.METRICS].upstream_seconds.observe(time.perf_counter() - started)
    if splitter.pending:
        await response.write(splitter.pending)
    await response.write_eof()
    return response


async def store_answer(app: web.Application, parsed: ParsedRequest, answer: dict[str, Any], body: bytes | None,
                       generation: int | None, *, send_first: Callable[[], Awaitable[None]] | None = None) -> None:
    """Store a complete answer: its question in the semantic tier's index (if any), then the
    entry in the exact tier.  ``send_first`` (sending a JSON answer) runs between the two, so
    the client does not wait for the exact tier's round trip: the index already has the
    question, and the exact tier serves this process's writes while they are in flight
    (:class:`~llmcache_sidecar.tiers.exact.RedisExactTier`), so a repeat or a paraphrase asked
    as soon as the answer arrived still hits.  Skipped if the revision changed since the
    request started or the exact tier is backing off; not kept if an invalidation of the cache
    began after ``generation`` was read (before the upstream call); backend trouble is counted,
    not raised."""
    cache = parsed.cache
    assert cache is not None
    health = app[state.EXACT_HEALTH]
    if not (app[state.REVISION].is_active(cache.revision) and health.available()):
        return  # an unsent response goes out when the handler returns it
    entry = Entry.from_answer(parsed.kind, answer, time.time(), body)
    await index_question(app, cache)
    if send_first is not None:
        await send_first()
    try:
        kept = await app[state.EXACT_TIER].set(cache.exact_key, entry.encode(), app[state.SETTINGS].ttl_seconds,
                                               generation=generation)
    except Exception as exc:  # noqa: BLE001
        health.failed(exc)
        log.warning("exact tier store failed: %s", exc)
        return
    health.succeeded()
    if not kept:
        log.info("not kept: an invalidation of cache %s began while its answer was asked for", cache.cache_name)


async def index_question(app: web.Application, cache: CacheRequest) -> None:
    """Add the question to the semantic tier (the vector is usually the lookup's, already
    computed; Milvus is written behind).  An entry whose exact write then fails is a miss when
    matched (:func:`lookup_semantic` finds no value), never a wrong answer."""
    semantic = app[state.SEMANTIC_TIER]
    if semantic is None or cache.query is None or not app[state.SEMANTIC_HEALTH].available():
        return
    try:
        await semantic.store(cache)
    except Exception as exc:  # noqa: BLE001
        semantic_failed(app, exc)
        return
    app[state.SEMANTIC_HEALTH].succeeded()
