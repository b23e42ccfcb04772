"""The bar an exact hit is measured against: a bare aiohttp pass-through hop to an instant upstream.

- the *instant upstream* answers every POST with the same small chat completion, prepared once;
- the *forwarder* reads the request, sends it upstream on one shared ``ClientSession`` and copies
  status, content type and body back: the least a Python proxy does per request, with no
  parsing, no hashing, no cache.

Each runs as its own process (``python -m bench.forwarder --port P [--upstream URL]``; without
``--upstream`` it is the instant upstream), so the harness can pin it to a core of its own.
"""

from __future__ import annotations

import argparse
import json

import aiohttp
from aiohttp import web

ANSWER = json.dumps({
    "id": "chatcmpl-instant", "object": "chat.completion", "created": 1700000000, "model": "test-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris is the capital of France."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
}).encode()

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM_URL = web.AppKey("upstream_url", str)


def instant_upstream_app() -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{path:.*}", answer)
    return app


def forwarder_app(upstream_url: str) -> web.Application:
    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app[SESSION].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with request.app[SESSION].post(request.app[UPSTREAM_URL] + request.path_qs, data=body,
                                             headers={"Content-Type": request.content_type}) as upstream:
            data = await upstream.read()
            return web.Response(status=upstream.status, body=data, content_type=upstream.content_type)

    app = web.Application()
    app[UPSTREAM_URL] = upstream_url.rstrip("/")
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{path:.*}", forward)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", help="forward to this URL; without it, be the instant upstream")
    args = parser.parse_args(argv)
    app = forwarder_app(args.upstream) if args.upstream else instant_upstream_app()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
