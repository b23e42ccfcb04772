"""Bad input through a running sidecar (Redis exact tier, test upstream): arbitrary bytes and
JSON, odd content types, deep and huge bodies, too many messages, giant or non-UTF-8 headers.

Every answer is a clear 4xx from the sidecar (OpenAI-style error body) or the upstream's own
answer passed through; never a 5xx made by the sidecar, never an unexpected-error log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.test_keys_properties import chat_bodies, json_values
from tests.upstream import TestUpstream, expected_chat

PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/other"]
FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                 "application/json; charset=latin-1", "", "x/\u00e9"]


@pytest.fixture
async def bad_input_sidecar(sidecar_factory: Any, redis_server: Any) -> Any:
    return await sidecar_factory(redis_url=redis_server.url, tenant_header="X-User", max_body_bytes=256 * 1024)


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture(autouse=True)
def _no_unexpected_errors(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.WARNING, logger="llmcache_sidecar")
    yield
    crashes = [r for r in caplog.records if r.name.startswith("llmcache_sidecar") and r.levelno >= logging.ERROR]
    assert not crashes, [r.getMessage() for r in crashes]


async def check_answer(response: aiohttp.ClientResponse) -> None:
    """A 4xx with an OpenAI-style error (from the sidecar or the upstream), or an upstream answer."""
    body = await response.read()
    assert response.status < 500 or response.headers.get("X-LLMCache") and response.status != 502, \
        (response.status, body[:300])
    if 400 <= response.status < 500 and response.content_type == "application/json":
        error = json.loads(body)["error"]
        assert error["message"]


async def send(http: aiohttp.ClientSession, handle: Any, path: str, data: bytes,
               headers: dict[str, str] | None = None) -> None:
    async with http.post(handle.api_url + path, data=data, headers=headers or {}) as response:
        await check_answer(response)


@FUZZ
@given(path=st.sampled_from(PATHS), data=st.binary(max_size=500), content_type=st.sampled_from(CONTENT_TYPES))
async def test_arbitrary_bytes(bad_input_sidecar: Any, http: aiohttp.ClientSession, path: str, data: bytes,
                               content_type: str) -> None:
    await send(http, bad_input_sidecar, path, data, {"Content-Type": content_type} if content_type else {})


@FUZZ
@given(path=st.sampled_from(PATHS[:3]), value=json_values)
async def test_arbitrary_json(bad_input_sidecar: Any, http: aiohttp.ClientSession, path: str, value: Any) -> None:
    await send(http, bad_input_sidecar, path, json.dumps(value).encode(), {"Content-Type": "application/json"})


@FUZZ
@given(body=chat_bodies, tenant=st.sampled_from(["", "alice", "a:b", "\u00e9", " x"]))
async def test_arbitrary_chat_requests(bad_input_sidecar: Any, http: aiohttp.ClientSession, upstream: TestUpstream,
                                       body: dict[str, Any], tenant: str) -> None:
    # the test upstream's own limits: it fails on a max_tokens it cannot compare, and makes n choices
    if not isinstance(body.get("max_tokens", 0), int):
        body["max_tokens"] = 7
    if "n" in body and not (isinstance(body["n"], int) and body["n"] <= 4):
        body["n"] = 2
    headers = {"Content-Type": "application/json", **({"X-User": tenant} if tenant else {})}
    async with http.post(bad_input_sidecar.api_url + "/v1/chat/completions", data=json.dumps(body).encode(),
                         headers=headers) as response:
        await check_answer(response)
        if response.status == 200 and response.content_type == "application/json":  # a correct pass-through or hit: the upstream's answer to this body
            answer = await response.json()
            assert answer["choices"][0]["message"]["content"] == expected_chat(upstream.last().body)[0] \
                or response.headers["X-LLMCache"] == "hit-exact"


@pytest.mark.parametrize("depth", [100, 254, 255, 600, 1023, 1024, 1025, 5000])
async def test_deeply_nested_bodies(bad_input_sidecar: Any, http: aiohttp.ClientSession, depth: int) -> None:
    raw = (b'{"model":"m","messages":[{"role":"user","content":"hi"}],"x":' + b"[" * depth + b"]" * depth + b"}")
    async with http.post(bad_input_sidecar.api_url + "/v1/chat/completions", data=raw) as response:
        await check_answer(response)
        if depth >= 1024:
            assert response.status == 400, "deeper than any JSON parser here reads"
        else:  # the answer, or the test upstream's own failure on very deep JSON, passed through
            assert response.headers["X-LLMCache"] == ("miss" if depth < 254 else "bypass")


async def test_huge_and_chunked_bodies_are_a_413(bad_input_sidecar: Any, http: aiohttp.ClientSession,
                                                 upstream: TestUpstream) -> None:
    huge = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 300_000}]}).encode()

    async def chunks() -> Any:
        for start in range(0, len(huge), 65536):
            yield huge[start:start + 65536]

    for data in (huge, chunks()):
        async with http.post(bad_input_sidecar.api_url + "/v1/chat/completions", data=data) as response:
            assert response.status == 413
            assert (await response.json())["error"]["code"] == "request_too_large"
    assert upstream.calls["/v1/chat/completions"] == 0


async def test_too_many_messages(bad_input_sidecar: Any, http: aiohttp.ClientSession, upstream: TestUpstream) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": str(i)} for i in range(3000)], "temperature": 0}
    for expected in ("miss", "hit-exact"):
        async with http.post(bad_input_sidecar.api_url + "/v1/chat/completions", json=body) as response:
            assert response.status == 200 and response.headers["X-LLMCache"] == expected
    assert upstream.calls["/v1/chat/completions"] == 1


@pytest.mark.parametrize("size", [100, 7000, 9000, 70_000])
async def test_giant_headers(bad_input_sidecar: Any, http: aiohttp.ClientSession, size: int) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    for headers in ({"X-Big": "v" * size}, {"X-User": "a" * size}, {f"X-H{i}": "v" for i in range(size // 50)}):
        async with http.post(bad_input_sidecar.api_url + "/v1/chat/completions", data=body,
                             headers=headers) as response:
            await check_answer(response)
            assert response.status in (200, 400, 431), response.status


def raw_request(url: str, head: bytes, body: bytes) -> int:
    """Send bytes aiohttp would refuse to send (a non-UTF-8 header value); the status line's code."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/v1/other"])
@pytest.mark.parametrize("value", [b"\xff\xfe", b"caf\xc3\xa9", b"\xc3"])
async def test_non_utf8_header_values(bad_input_sidecar: Any, path: str, value: bytes) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    for header in (b"X-Other", b"X-User"):
        head = b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" \
            + header + b": " + value + b"\r\n"
        status = await asyncio.to_thread(raw_request, bad_input_sidecar.api_url, head, body)
        assert status < 500, (path, header, value, status)
