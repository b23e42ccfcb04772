"""The key builder: every answer-changing field changes the key, transport fields do not."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llmcache_sidecar.config import Settings
from llmcache_sidecar.errors import InvalidRequest
from llmcache_sidecar.keys import CacheControl, KeyBuilder, ParsedRequest

CHAT = "/v1/chat/completions"
BASE: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}],
    "temperature": 0,
}


def builder(**settings: Any) -> KeyBuilder:
    return KeyBuilder(Settings(upstream_url="http://up", **settings))


def parse(body: dict[str, Any], *, kind: str = "chat", path: str = CHAT, headers: dict[str, str] | None = None,
          revision: str = "r1", keys: KeyBuilder | None = None, semantic: bool = True) -> ParsedRequest:
    return (keys or builder()).parse(kind, orjson.dumps(body), path, headers or {}, revision,  # type: ignore[arg-type]
                                     semantic=semantic)


def key(body: dict[str, Any], **kwargs: Any) -> str:
    parsed = parse(body, **kwargs)
    assert parsed.cache is not None, parsed.bypass_reason
    return parsed.cache.exact_key


@pytest.mark.parametrize("change", [
    {"model": "other"},
    {"temperature": 0.5},
    {"top_p": 0.9},
    {"max_tokens": 10},
    {"stop": ["\n"]},
    {"seed": 7},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    {"tool_choice": "auto"},
    {"response_format": {"type": "json_object"}},
    {"logprobs": True},
    {"presence_penalty": 0.1},
    {"some_future_field": 1},
    {"messages": [{"role": "system", "content": "be long"}, {"role": "user", "content": "hi there"}]},
    {"messages": [{"role": "user", "content": "hi there"}]},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there!"}]},
])
def test_every_answer_changing_field_changes_the_key(change: dict[str, Any]) -> None:
    assert key({**BASE, **change}) != key(BASE)


@pytest.mark.parametrize("change", [
    {"stream": True},
    {"stream": True, "stream_options": {"include_usage": True}},
    {"user": "someone"},
    {"n": 1},
    {"temperature": 0.0},
])
def test_transport_fields_and_equivalent_values_keep_the_key(change: dict[str, Any]) -> None:
    assert key({**BASE, **change}) == key(BASE)


def test_key_ignores_field_order() -> None:
    reordered = {"temperature": 0, "messages": BASE["messages"], "model": "m"}
    assert key(reordered) == key(BASE)


def test_key_layout_and_separation_by_revision_tenant_cache_and_path() -> None:
    keys = builder(tenant_header="X-Tenant", cache_name="c1")
    plain = key(BASE, keys=keys)
    assert plain.startswith("llmcache:c1:r1::e:") and len(plain.rsplit(":", 1)[1]) == 64
    alice = key(BASE, keys=keys, headers={"X-Tenant": "alice"})
    assert alice.startswith("llmcache:c1:r1:alice:e:")
    assert len({plain, alice, key(BASE, keys=keys, headers={"X-Tenant": "bob"}),
                key(BASE, keys=keys, revision="r2"), key(BASE, keys=builder(cache_name="c2")),
                key(BASE, keys=keys, path=CHAT + "?api-version=2")}) == 6


def test_tenant_header_ignored_without_setting() -> None:
    assert key(BASE, headers={"X-LLMCache-Tenant": "alice"}) == key(BASE)


@pytest.mark.parametrize("tenant", ["a:b", "has space", "x" * 129, "star*"])
def test_invalid_tenant_is_refused(tenant: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse(BASE, keys=builder(tenant_header="X-Tenant"), headers={"X-Tenant": tenant})
    assert err.value.status == 400 and err.value.param == "X-Tenant"


def test_endpoints_never_share_keys() -> None:
    completion = key({"model": "m", "prompt": "hi"}, kind="completions", path="/v1/completions")
    embedding = key({"model": "m", "input": "hi"}, kind="embeddings", path="/v1/embeddings")
    assert completion != embedding


@pytest.mark.parametrize(("body", "reason"), [
    ({**BASE, "temperature": 0.9}, "temperature"),
    ({**BASE, "temperature": "hot"}, "invalid-temperature"),
    ({**BASE, "n": 2}, "n"),
])
def test_bypass(body: dict[str, Any], reason: str) -> None:
    parsed = parse(body)
    assert parsed.cache is None and parsed.bypass_reason == reason


def test_temperature_at_the_limit_is_cached() -> None:
    assert parse({**BASE, "temperature": 0.8}).cache is not None
    assert parse({**BASE, "temperature": 1.5}, keys=builder(max_temperature=2.0)).cache is not None


@pytest.mark.parametrize(("raw", "param"), [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
    (b'{"model": 3, "messages": [{"role": "user", "content": "x"}]}', "model"),
    (b'{"model": "m"}', "messages"),
    (b'{"model": "m", "messages": []}', "messages"),
    (b'{"model": "m", "messages": "hello"}', "messages"),
])
def test_malformed_chat_bodies(raw: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as err:
        builder().parse("chat", raw, CHAT, {}, "r", semantic=False)
    assert err.value.status == 400 and err.value.param == param


def test_completions_need_a_prompt_and_embeddings_an_input() -> None:
    with pytest.raises(InvalidRequest) as err:
        builder().parse("completions", b'{"model": "m"}', "/v1/completions", {}, "r", semantic=False)
    assert err.value.param == "prompt"
    with pytest.raises(InvalidRequest) as err:
        builder().parse("embeddings", b'{"model": "m"}', "/v1/embeddings", {}, "r", semantic=False)
    assert err.value.param == "input"


def test_semantic_scope_and_query() -> None:
    cache = parse(BASE).cache
    assert cache is not None and cache.query == "hi there"
    other_question = parse({**BASE, "messages": [BASE["messages"][0], {"role": "user", "content": "bye"}]}).cache
    assert other_question is not None
    assert other_question.scope == cache.scope and other_question.exact_key != cache.exact_key
    other_system = parse({**BASE, "messages": [{"role": "system", "content": "x"}, BASE["messages"][1]]}).cache
    other_param = parse({**BASE, "max_tokens": 3}).cache
    assert other_system is not None and other_param is not None
    assert len({cache.scope, other_system.scope, other_param.scope}) == 3


def test_semantic_query_of_text_parts_prompts_and_images() -> None:
    texts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    parts = {**BASE, "messages": [{"role": "user", "content": texts}]}
    assert (parse(parts).cache or pytest.fail()).query == "a\nb"
    image = {**BASE, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    assert (parse(image).cache or pytest.fail()).query is None
    prompt = parse({"model": "m", "prompt": ["tell me"]}, kind="completions", path="/v1/completions").cache
    assert prompt is not None and prompt.query == "tell me"
    tokens = parse({"model": "m", "prompt": [1, 2, 3]}, kind="completions", path="/v1/completions").cache
    assert tokens is not None and tokens.query is None
    assert (parse(BASE, semantic=False).cache or pytest.fail()).query is None


@pytest.mark.parametrize(("header", "expected"), [
    (None, CacheControl()),
    ("no-cache", CacheControl(no_cache=True)),
    ("No-Store", CacheControl(no_store=True)),
    ("max-age=30", CacheControl(max_age=30)),
    ("no-cache, max-age=5", CacheControl(no_cache=True, max_age=5)),
    ("max-age=oops", CacheControl()),
])
def test_cache_control(header: str | None, expected: CacheControl) -> None:
    assert CacheControl.parse(header) == expected


def test_stream_flags() -> None:
    streamed = parse({**BASE, "stream": True, "stream_options": {"include_usage": True}})
    assert streamed.stream and streamed.include_usage
    plain = parse({**BASE, "stream_options": {"include_usage": True}})
    assert not plain.stream and not plain.include_usage
