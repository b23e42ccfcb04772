"""Property-based tests of the request parser and key builder (``keys.py``).

For any bytes the parser either returns a request or raises :class:`InvalidRequest` (a 400/413),
never anything else; two bodies get the same key exactly when they mean the same (the documented
normalisation: transport fields dropped, ``n: 1`` dropped, integral top-level floats as ints).
The reference meaning is computed with the standard library's exact JSON (big integers stay
exact), so a parser that loses precision shows up as a collision.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from llmcache_sidecar.config import Settings
from llmcache_sidecar.errors import InvalidRequest
from llmcache_sidecar.keys import IRRELEVANT_FIELDS, KeyBuilder, ParsedRequest

CHAT = "/v1/chat/completions"
EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values, numbers included at the edges orjson treats specially (beyond 64 bits, -0.0, 1e300)
_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 1.0, -0.0, 2**64, 2**64 + 1, 10**30, 10**30 + 1, 1e300, 0.1]),
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, st.text(max_size=20))
json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
_messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                           "content": st.one_of(st.text(max_size=30), json_values)}),
    min_size=1, max_size=4,
)
_field_names = st.sampled_from(["temperature", "top_p", "max_tokens", "seed", "stop", "n", "tools", "user",
                                "stream", "stream_options", "response_format", "x_custom"])
chat_bodies = st.builds(
    lambda model, messages, extra: {"model": model, "messages": messages, **extra},
    st.sampled_from(["m", "other"]), _messages, st.dictionaries(_field_names, json_values, max_size=4),
)


def builder(**overrides: Any) -> KeyBuilder:
    return KeyBuilder(Settings(upstream_url="http://up", **overrides))


def parse(raw: bytes, *, kind: str = "chat", headers: dict[str, str] | None = None) -> ParsedRequest:
    return builder(tenant_header="X-User").parse(kind, raw, CHAT, headers or {}, "r1", semantic=True)  # type: ignore[arg-type]


def meaning(body: dict[str, Any]) -> str:
    """The reference: what the key must distinguish, as exact JSON text."""
    kept = {}
    for name, value in body.items():
        if name in IRRELEVANT_FIELDS:
            continue
        if type(value) is float and value.is_integer():
            value = int(value)
        kept[name] = value
    if kept.get("n") == 1:
        del kept["n"]
    return json.dumps(kept, sort_keys=True)


def exact_key(body: dict[str, Any]) -> str | None:
    """The key the sidecar builds from the body as a client would send it (None: bypass)."""
    parsed = parse(json.dumps(body).encode())
    return parsed.cache.exact_key if parsed.cache is not None else None


@EXAMPLES
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_refused(raw: bytes) -> None:
    for kind in ("chat", "completions", "embeddings"):
        try:
            parse(raw, kind=kind)
        except InvalidRequest as exc:
            assert exc.status in (400, 413) and exc.message


@EXAMPLES
@given(json_values)
def test_any_json_parses_or_is_refused(value: Any) -> None:
    raw = json.dumps(value).encode()
    for kind in ("chat", "completions", "embeddings"):
        try:
            parsed = parse(raw, kind=kind)
        except InvalidRequest as exc:
            assert exc.status == 400 and exc.message
        else:
            assert isinstance(parsed.body, dict)


@EXAMPLES
@given(chat_bodies, chat_bodies)
def test_keys_equal_exactly_when_the_bodies_mean_the_same(first: dict[str, Any], second: dict[str, Any]) -> None:
    first_key, second_key = exact_key(first), exact_key(second)
    assume(first_key is not None and second_key is not None)
    assert (first_key == second_key) == (meaning(first) == meaning(second)), (first, second)


@EXAMPLES
@given(chat_bodies, st.randoms())
def test_field_order_and_transport_fields_do_not_change_the_key(body: dict[str, Any], rnd: Any) -> None:
    key = exact_key(body)
    assume(key is not None)
    names = list(body)
    rnd.shuffle(names)
    shuffled = {name: body[name] for name in names}
    shuffled.update(stream=True, stream_options={"include_usage": True}, user="someone")
    assert exact_key(shuffled) == key


@EXAMPLES
@given(chat_bodies, st.sampled_from(["alice", "bob", ""]), st.sampled_from(["alice", "bob", ""]))
def test_tenants_never_share_a_key(body: dict[str, Any], first: str, second: str) -> None:
    raw = json.dumps(body).encode()
    one = parse(raw, headers={"X-User": first} if first else {})
    two = parse(raw, headers={"X-User": second} if second else {})
    assume(one.cache is not None)
    assert two.cache is not None
    assert (one.cache.exact_key == two.cache.exact_key) == (first == second)
    assert (one.cache.tenant, two.cache.tenant) == (first, second)


@EXAMPLES
@given(st.text(max_size=200))
def test_any_tenant_header_is_accepted_or_refused(value: str) -> None:
    raw = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    try:
        parsed = parse(raw, headers={"X-User": value})
    except InvalidRequest as exc:
        assert exc.status == 400 and exc.param == "X-User"
    else:
        assert parsed.cache is not None and ":" not in parsed.cache.tenant


@given(st.integers(min_value=2, max_value=1000))
@settings(max_examples=20, deadline=None)
def test_deeply_nested_bodies_pass_through_or_are_refused(depth: int) -> None:
    raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"x":' + b"[" * depth + b"]" * depth + b"}"
    try:
        parsed = parse(raw)
    except InvalidRequest as exc:
        assert exc.status == 400
    else:
        assert parsed.cache is not None or parsed.bypass_reason is not None


def test_integers_beyond_64_bits_never_collide() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    keys = [exact_key({**base, "seed": seed}) for seed in (10**30, 10**30 + 1, 2**64, 2**64 + 1, 2**64 - 1)]
    covered = [key for key in keys if key is not None]  # None: a body the key cannot cover passes through
    assert len(set(covered)) == len(covered), keys


def test_huge_float_exponent_is_refused() -> None:
    raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":1e400}'
    try:
        parse(raw)
    except InvalidRequest as exc:
        assert exc.status == 400
    else:
        raise AssertionError("1e400 is not a finite number")

