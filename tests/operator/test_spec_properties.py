"""Property-based: whatever JSON an LLMCache's spec holds, the operator's pure part either builds
its children or refuses it with one :class:`SpecError` whose message says where the problem is,
never another exception (which kopf would retry forever: a crash loop in all but name)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmcache_operator.children import cache_context, desired_state
from llmcache_operator.spec import LLMCacheSpec, SpecError, parse_spec
from llmcache_operator.webhook import InjectionOptions, injected_pod

from tests.operator.spec_strategies import FIELDS, any_specs, broken_specs, json_values
from tests.operator.test_builders import K8S_VERSIONS, MODEL, context

#: Longer than this, a status message is no longer something a user reads (10 problems at most).
READABLE_CHARS = 4000
APP_POD: dict[str, Any] = {"metadata": {"name": "app", "annotations": {"llmcache.dev/inject": "demo"}},
                           "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def refusal(spec: Any) -> str | None:
    """None if ``spec`` parses; else the SpecError's message (any other exception fails the test)."""
    try:
        parsed = parse_spec(spec)
    except SpecError as exc:
        return str(exc)
    assert isinstance(parsed, LLMCacheSpec)
    return None


def assert_readable(message: str) -> None:
    assert 0 < len(message) <= READABLE_CHARS, len(message)
    assert message.isprintable(), "one line, no control characters"


@FAST
@given(any_specs)
def test_any_spec_parses_or_is_refused_with_a_readable_spec_error(spec: Any) -> None:
    message = refusal(spec)
    if message is not None:
        assert_readable(message)
        assert message.startswith("spec"), message


@FAST
@given(st.sampled_from(sorted(FIELDS)), st.data())
def test_a_refusal_names_the_broken_section(section: str, data: st.DataObject) -> None:
    spec: dict[str, Any] = {"model": dict(MODEL)}
    if section == "model" or data.draw(st.booleans()):
        spec[section] = {**spec.get(section, {}), data.draw(st.sampled_from(FIELDS[section])): data.draw(json_values)}
    else:
        spec[section] = data.draw(json_values)
    message = refusal(spec)
    if message is not None:
        assert_readable(message)
        assert f"spec.{section}" in message, message


@pytest.mark.parametrize("spec", [None, "model: x", ["model"], 42, True, {}, {"model": None}, {"model": []}])
def test_a_spec_that_is_not_an_object_or_has_no_model_says_so(spec: Any) -> None:
    message = refusal(spec)
    assert message is not None and ("must be an object" in message or "spec.model" in message), message


def test_a_huge_spec_gives_a_short_message() -> None:
    spec = {"model": {"name": "m", "revision": "r" * 1_000_000},
            **{f"unknown-{i}": "x" * 10_000 for i in range(50)},
            "redis": {"mode": "external", "url": "ftp://" + "h" * 4000},
            "vllm": {"resources": {"limits": {"k" * 5000: "lots" * 5000}}}}
    message = refusal(spec)
    assert message is not None
    assert_readable(message)
    assert "and 43 more problems" in message  # 53: revision, resources, redis.url, 50 unknown keys


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(broken_specs(max_changes=2), st.sampled_from(["demo", "x" * 45, "x" * 46]))
def test_what_parses_builds_children_the_api_accepts_or_is_refused_as_a_spec_error(spec: Any, name: str) -> None:
    """The whole pure path a reconcile and an admission review take, on the same specs."""
    try:
        ctx = cache_context(name, "apps", spec, context({"model": MODEL}).config)
        revision = ctx.spec.model.revision
        state = desired_state(ctx, revision, frozenset({revision}))
        pod = injected_pod(APP_POD, ctx, InjectionOptions(native_sidecar=True))
    except SpecError as exc:
        assert_readable(str(exc))
        return
    for manifest in state.manifests:
        kubernetes_validate.validate(manifest, K8S_VERSIONS[-1], strict=True)
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", **pod}, K8S_VERSIONS[-1], strict=True)
    for workload in (m for m in state.manifests if m["kind"] in ("Deployment", "StatefulSet")):
        assert 0 <= workload["spec"]["replicas"] < 2**31, "replicas is an int32"
