"""OpenAI-style error bodies: what every non-upstream error of the sidecar looks like."""

from __future__ import annotations

import orjson
from aiohttp import web


class InvalidRequest(Exception):
    """A request the sidecar refuses before it reaches the upstream (answered with 400/413)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


def error_body(message: str, kind: str, *, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def error_response(status: int, message: str, kind: str, *, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(message, kind, param=param, code=code),
                        content_type="application/json", headers=headers)


def invalid_request_response(exc: InvalidRequest) -> web.Response:
    return error_response(exc.status, exc.message, "invalid_request_error", param=exc.param, code=exc.code)
