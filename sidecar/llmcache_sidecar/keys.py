"""From a request body to a cache key (or the reason the cache is bypassed).

A key covers the cache name, the revision, the tenant, the endpoint (path and query string) and
every body field except a few known not to change the answer (:data:`IRRELEVANT_FIELDS`), as
canonical JSON (sorted keys) hashed with sha256.  A field the sidecar has never heard of is part
of the key: an unknown field may change the answer, a needless miss is cheap, a wrong hit is not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from llmcache_sidecar.config import Settings
from llmcache_sidecar.errors import InvalidRequest
from llmcache_sidecar.tiers.base import CacheRequest

Kind = Literal["chat", "completions", "embeddings"]

#: Body fields that only change the transport or bookkeeping, never the answer.
IRRELEVANT_FIELDS = frozenset({"stream", "stream_options", "user"})

#: Which body field holds the input of each endpoint (required: 400 without it).
INPUT_FIELD: dict[Kind, str] = {"chat": "messages", "completions": "prompt", "embeddings": "input"}

#: Endpoints whose upstream (vLLM) shares a prefix cache between requests: a tenant's requests
#: carry a ``cache_salt`` of its own, so no tenant can time another's cached prefixes.
SALTED_KINDS = frozenset({"chat", "completions"})

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")

_MAX_AGE = re.compile(r"max-age\s*=\s*\"?(\d+)\"?")

#: a number orjson may read inexactly (a run of 19 or more digits): it turns integers beyond 64
#: bits into floats, so two different seeds could share a key; such bodies are read by the (exact)
#: standard library.  Found by turning every non-digit byte into a space and splitting: 4-9x
#: cheaper than a regex search, which cost more than orjson's whole parse.
_LONG_NUMBER_DIGITS = 19
_DIGITS_ONLY = bytes(byte if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))


def has_long_number(raw: bytes) -> bool:
    return any(len(run) >= _LONG_NUMBER_DIGITS for run in raw.translate(_DIGITS_ONLY).split())


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The request's ``Cache-Control`` directives the cache honours."""

    no_cache: bool = False
    no_store: bool = False
    max_age: int | None = None

    @classmethod
    def parse(cls, header: str | None) -> CacheControl:
        if not header:
            return NO_DIRECTIVES
        lowered = header.lower()
        directives = {part.strip() for part in lowered.split(",")}
        match = _MAX_AGE.search(lowered)
        return cls(
            no_cache="no-cache" in directives,
            no_store="no-store" in directives,
            max_age=int(match.group(1)) if match else None,
        )


NO_DIRECTIVES = CacheControl()


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A cacheable endpoint's request after parsing: the key, or why the cache is bypassed."""

    kind: Kind
    body: dict[str, Any]
    stream: bool
    #: the client asked for a usage chunk at the end of its stream
    include_usage: bool
    control: CacheControl
    #: None when the request bypasses the cache (see ``bypass_reason``)
    cache: CacheRequest | None
    bypass_reason: str | None = None
    #: the ``cache_salt`` to add to the body sent upstream (None: none to add)
    cache_salt: str | None = None


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def decode_json(raw: bytes) -> Any:
    """JSON as orjson reads it, except that integers too long for 64 bits stay exact."""
    if not has_long_number(raw):
        return orjson.loads(raw)
    return json.loads(raw, parse_float=_finite, parse_constant=_no_constant)


def parse_body(raw: bytes, kind: Kind) -> dict[str, Any]:
    """Decode and check the minimum the sidecar needs; anything else is left to the upstream."""
    try:
        body = decode_json(raw)
    except (ValueError, RecursionError) as exc:  # orjson.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidRequest(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter (a non-empty string)", param="model",
                             code="missing_required_parameter" if model is None else "invalid_type")
    field = INPUT_FIELD[kind]
    value = body.get(field)
    if value is None:
        raise InvalidRequest(f"missing required parameter: '{field}'", param=field, code="missing_required_parameter")
    if kind == "chat" and (not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value)):
        raise InvalidRequest("'messages' must be a non-empty array of message objects", param="messages",
                             code="invalid_type")
    return body


def canonical(body: Mapping[str, Any]) -> dict[str, Any]:
    """The answer-changing part of a body: irrelevant fields dropped, ``n: 1`` dropped (the
    default), integral floats at the top level written as ints (``temperature: 0`` == ``0.0``)."""
    result: dict[str, Any] = {}
    for name, value in body.items():
        if name in IRRELEVANT_FIELDS:
            continue
        if type(value) is float and value.is_integer():
            value = int(value)
        result[name] = value
    if result.get("n") == 1:
        del result["n"]
    return result


def digest(path_qs: str, body: Mapping[str, Any]) -> str:
    payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(path_qs.encode() + b"\n" + payload).hexdigest()


def text_of(content: Any) -> str | None:
    """The text of a message's content: a string, or an array of text parts (None if it holds
    anything else, e.g. an image, which the semantic tier cannot compare)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                return None
            texts.append(part["text"])
        return "\n".join(texts)
    return None


def semantic_parts(kind: Kind, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(the body without its query, the query) for the semantic tier: the query is the last user
    message (chat) or the single prompt (completions)."""
    if kind == "chat":
        messages: list[dict[str, Any]] = body["messages"]
        for index in range(len(messages) - 1, -1, -1):
            if messages[index].get("role") == "user":
                rest = list(messages)
                rest[index] = {**messages[index], "content": None}
                return {**body, "messages": rest}, text_of(messages[index].get("content"))
        return body, None
    if kind == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        return {**body, "prompt": None}, prompt if isinstance(prompt, str) else None
    return body, None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class KeyBuilder:
    """Parses requests of one sidecar into :class:`ParsedRequest`; settings are read once."""

    def __init__(self, settings: Settings) -> None:
        self.cache_name = settings.cache_name
        self.max_temperature = settings.max_temperature
        self.tenant_header = settings.tenant_header
        # keyed by a Secret when there is one, so a client cannot compute another tenant's salt
        self._salt_key = (settings.admin_token or "").encode()

    def tenant(self, headers: Mapping[str, str]) -> str:
        if self.tenant_header is None:
            return ""
        value = headers.get(self.tenant_header)
        if value is None or value == "":
            return ""
        if not TENANT_PATTERN.match(value):
            raise InvalidRequest(
                f"invalid {self.tenant_header} header: a tenant id is 1-128 characters of A-Z a-z 0-9 . _ @ -",
                param=self.tenant_header, code="invalid_tenant")
        return value

    def cache_salt(self, kind: Kind, tenant: str, body: Mapping[str, Any]) -> str | None:
        """The tenant's vLLM ``cache_salt`` (an HMAC of cache name and tenant, not the tenant id);
        None without a tenant, on other endpoints, or when the client sent a salt of its own."""
        if not tenant or kind not in SALTED_KINDS or "cache_salt" in body:
            return None
        return hmac.new(self._salt_key, f"{self.cache_name}\n{tenant}".encode(), hashlib.sha256).hexdigest()

    def bypass_reason(self, kind: Kind, body: Mapping[str, Any]) -> str | None:
        if kind == "embeddings":
            return None
        temperature = body.get("temperature")
        if temperature is not None:
            if not _is_number(temperature):
                return "invalid-temperature"
            if temperature > self.max_temperature:
                return "temperature"
        n = body.get("n")
        if n is not None and n != 1:
            return "n"
        return None

    def parse(self, kind: Kind, raw: bytes, path_qs: str, headers: Mapping[str, str], revision: str,
              *, semantic: bool) -> ParsedRequest:
        """Raise :class:`InvalidRequest` for a body the sidecar cannot work with.  ``semantic``:
        also compute the scope and query (only needed when a semantic tier runs)."""
        body = parse_body(raw, kind)
        tenant = self.tenant(headers)
        control = CacheControl.parse(headers.get("Cache-Control"))
        stream = kind != "embeddings" and body.get("stream") is True
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
        salt = self.cache_salt(kind, tenant, body)
        reason = self.bypass_reason(kind, body)
        if reason is not None:
            return ParsedRequest(kind, body, stream, include_usage, control, None, reason, salt)
        key_body = canonical(body)
        try:
            exact = f"llmcache:{self.cache_name}:{revision}:{tenant}:e:{digest(path_qs, key_body)}"
            scope, query = "", None
            if semantic:
                scope_body, query = semantic_parts(kind, key_body)
                scope = digest(path_qs, scope_body)
        except TypeError:  # orjson.JSONEncodeError: nested deeper than 254, an integer beyond 64 bits
            return ParsedRequest(kind, body, stream, include_usage, control, None, "unkeyable", salt)
        cache = CacheRequest(cache_name=self.cache_name, revision=revision, tenant=tenant, scope=scope,
                             query=query, exact_key=exact)
        return ParsedRequest(kind, body, stream, include_usage, control, cache, cache_salt=salt)
