"""Talking to the upstream: the pooled session, header filtering, error mapping, pass-through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from llmcache_sidecar.config import Settings
from llmcache_sidecar.errors import error_response

#: per-connection headers (RFC 9110 7.6.1) and the ones aiohttp recomputes for each hop
HOP_HEADERS = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Host", "Content-Length",
))
#: also dropped on cacheable calls, whose answers the sidecar decodes (identity encoding wanted)
_DECODED_HEADERS = HOP_HEADERS | {"accept-encoding", "content-encoding"}

#: connections kept to the upstream (per sidecar; one app rarely has more calls in flight)
POOL_SIZE = 256


def make_session(settings: Settings) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=settings.upstream_timeout_seconds,
                                    connect=settings.upstream_connect_timeout_seconds)
    connector = aiohttp.TCPConnector(limit=POOL_SIZE, ttl_dns_cache=60, enable_cleanup_closed=True)
    return aiohttp.ClientSession(base_url=None, connector=connector, timeout=timeout,
                                 auto_decompress=True, skip_auto_headers=("User-Agent",))


def request_headers(headers: CIMultiDictProxy[str], *, decoded: bool) -> CIMultiDict[str]:
    """The client's headers as sent to the upstream (``decoded``: ask for an identity body)."""
    dropped = _DECODED_HEADERS if decoded else HOP_HEADERS
    return CIMultiDict((name, value) for name, value in headers.items() if name.lower() not in dropped)


def response_headers(headers: CIMultiDictProxy[str], *, decoded: bool) -> CIMultiDict[str]:
    """The upstream's headers as sent to the client (``decoded``: the body was decompressed)."""
    dropped = _DECODED_HEADERS if decoded else HOP_HEADERS
    return CIMultiDict((name, value) for name, value in headers.items()
                       if name.lower() not in dropped and name.lower() not in ("date", "server"))


def unreachable_response(exc: BaseException, headers: dict[str, str] | None = None) -> web.Response:
    """502 (cannot connect, connection lost) or 504 (timed out) with an OpenAI-style body."""
    if isinstance(exc, asyncio.TimeoutError):
        return error_response(504, "the upstream did not answer in time", "upstream_error",
                              code="upstream_timeout", headers=headers)
    return error_response(502, f"the upstream is unreachable: {type(exc).__name__}: {exc}", "upstream_error",
                          code="upstream_unreachable", headers=headers)


#: what the upstream session raises when the upstream fails before or during an answer
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def cut_client_connection(request: web.Request) -> None:
    """The upstream broke off a streamed answer: break off ours too, so the client sees a
    truncated answer (no terminating chunk) rather than one that looks complete."""
    if request.transport is not None:
        request.transport.close()


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk


async def pass_through(request: web.Request, session: aiohttp.ClientSession, upstream_url: str) -> web.StreamResponse:
    """Forward any request untouched (headers, body, encoding) and stream the answer back."""
    body = _body_chunks(request) if request.body_exists else None
    headers = request_headers(request.headers, decoded=False)
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    try:
        async with session.request(request.method, upstream_url + request.path_qs, headers=headers, data=body,
                                   auto_decompress=False, allow_redirects=False) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                          headers=response_headers(upstream.headers, decoded=False))
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except UPSTREAM_ERRORS:
                cut_client_connection(request)
                return response
            await response.write_eof()
            return response
    except UPSTREAM_ERRORS as exc:
        return unreachable_response(exc)

