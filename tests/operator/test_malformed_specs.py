"""The real operator (kopf against the emulator) meets malformed LLMCaches: each ends in
``phase: Failed`` with a condition saying what to fix, after one handler run (no retries), with
nothing created, and the operator goes on serving valid LLMCaches.

The emulator enforces no CRD schema, as a cluster with an older CRD (or none of its rules) would
not: these specs reach the operator.
"""

from __future__ import annotations

import itertools
from typing import Any

import kmock
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from llmcache_operator import kube
from llmcache_operator.spec import SpecError, parse_spec

from tests.operator.conftest import Cluster, resource_key
from tests.operator.spec_strategies import MODEL, broken_specs
from tests.operator.test_operator import EXTERNAL, condition, phase_is

CHILD_KINDS = (kube.DEPLOYMENTS, kube.STATEFULSETS, kube.SERVICES, kube.CONFIGMAPS, kube.SECRETS)
#: The annotation kopf keeps once a spec is handled, and its mark on the objects it serves; any
#: other ``llmcache.dev/`` annotation on the LLMCache is kopf's progress record of a handler still
#: to retry (``llmcache.dev/reconcile...``: retries, delays, failures).
HANDLED_ANNOTATION = "llmcache.dev/last-handled-configuration"
KOPF_ANNOTATIONS = {HANDLED_ANNOTATION, "llmcache.dev/kopf-managed"}

#: Hand-picked: each (spec, a fragment of the message that says what to fix).
MALFORMED: dict[str, tuple[Any, str]] = {
    "not-an-object": ("model: llama", "spec: must be an object"),
    "an-array": ([{"model": MODEL}], "spec: must be an object"),
    "no-model": ({"vllm": {"replicas": 2}}, "spec.model: Field required"),
    "wrong-types": ({"model": MODEL, "vllm": {"replicas": "many", "gpus": -3}, "redis": {"storage": 12}},
                    "spec.vllm.replicas: Input should be a valid integer"),
    "nested-junk": ({"model": MODEL, "cache": {"semantic": {"threshold": {"a": [1, {"b": None}]}}}, "extra": [[[]]]},
                    "spec.cache.semantic.threshold"),
    "negative": ({"model": MODEL, "cache": {"exact": {"ttlSeconds": -1}}, "sidecar": {"port": -8080}},
                 "spec.cache.exact.ttlSeconds: Input should be greater than or equal to 1"),
    "huge-unicode": ({"model": {"name": "é" * 100_000, "revision": "🙂" * 200}},
                     "spec.model.revision: String should have at most 128 characters"),
    "inline-password": ({"model": MODEL, "redis": {"mode": "external", "url": "redis://:hunter2@redis.example:6379/0"}},
                        "put it in a Secret, name it in redis.passwordSecret"),
}


def refused(spec: Any) -> bool:
    try:
        parse_spec(spec)
    except SpecError:
        return True
    return False


def failed(cluster: Cluster, name: str) -> dict[str, Any]:
    cache = cluster.cache(name)
    assert cache["status"]["phase"] == "Failed"
    ready = condition(cache, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec") and len(ready["message"]) <= 4000
    return ready


def assert_handled_once(cluster: Cluster, name: str) -> None:
    """One handler run, finished: one InvalidSpec Event, and no retry pending in kopf's records."""
    events = [e for e in cluster.events("InvalidSpec") if e["involvedObject"]["name"] == name]
    assert len(events) == 1, [e["message"][:80] for e in events]
    assert events[0]["type"] == "Warning" and len(events[0]["message"]) <= 1024
    annotations = cluster.cache(name)["metadata"].get("annotations") or {}
    pending = {key for key in annotations if key.startswith("llmcache.dev/") and key not in KOPF_ANNOTATIONS}
    assert not pending, f"kopf would retry: {pending}"
    assert HANDLED_ANNOTATION in annotations


def children(cluster: Cluster) -> set[tuple[str, str]]:
    return {(res.kind, name) for res in CHILD_KINDS for name in cluster.names(res)}


async def assert_still_reconciles(cluster: Cluster, name: str, spec: dict[str, Any] | None = None) -> None:
    """A valid cache still gets its children (managed by default; ``spec``, e.g. all external, for less traffic)."""
    await cluster.create_cache(name, spec or {"model": MODEL})
    await cluster.wait_for(lambda: cluster.cache(name).get("status", {}).get("phase") in ("Provisioning", "Ready"),
                           what=f"{name} provisioned")
    assert ("ConfigMap", f"{name}-sidecar") in children(cluster)
    if spec is None:
        assert ("StatefulSet", f"{name}-redis") in children(cluster)


async def test_malformed_caches_fail_once_with_a_message_and_the_operator_goes_on(
    cluster: Cluster, operator: None,
) -> None:
    for name, (spec, _) in MALFORMED.items():
        await cluster.create_cache(name, spec)
    for name, (_, fragment) in MALFORMED.items():
        await cluster.wait_for(phase_is(cluster, name, "Failed"), what=f"{name} Failed")
        assert fragment in failed(cluster, name)["message"], name
    await cluster.settle()
    for name in MALFORMED:
        assert_handled_once(cluster, name)
    assert children(cluster) == set(), "nothing is created for a malformed LLMCache"
    await assert_still_reconciles(cluster, "good")


async def test_fixing_a_malformed_cache_provisions_it(cluster: Cluster, operator: None) -> None:
    await cluster.create_cache("fixme", {"model": MODEL, "vllm": {"replicas": "many"}})
    await cluster.wait_for(phase_is(cluster, "fixme", "Failed"), what="Failed")
    await cluster.patch_cache("fixme", {"vllm": {"replicas": 2}})
    await cluster.wait_for(phase_is(cluster, "fixme", "Provisioning"), what="Provisioning after the fix")
    assert cluster.obj(kube.DEPLOYMENTS, "fixme-vllm-2024-09-25")["spec"]["replicas"] == 2
    assert condition(cluster.cache("fixme"), "Ready")["reason"] != "InvalidSpec"


_names = itertools.count()


@pytest.mark.filterwarnings("ignore:Do not use the `random` module")  # kopf's own jitter, in its thread
@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(broken_specs(max_chars=70_000), min_size=3, max_size=3))
async def test_drawn_malformed_caches_fail_without_retries(cluster: Cluster, operator: None, specs: list[Any]) -> None:
    """One operator for every example: it must survive them all, and still serve a valid cache."""
    for spec in specs:
        assume(refused(spec))
    names = [f"drawn-{next(_names)}" for _ in specs]
    before = children(cluster)
    for name, spec in zip(names, specs, strict=True):
        await cluster.create_cache(name, spec)
    for name in names:
        await cluster.wait_for(phase_is(cluster, name, "Failed"), what=f"{name} Failed")
        failed(cluster, name)
    await cluster.settle(quiet_seconds=0.5)
    for name in names:
        assert_handled_once(cluster, name)
    assert children(cluster) == before
    await assert_still_reconciles(cluster, f"good-{names[0]}", EXTERNAL)


async def test_a_child_the_api_server_refuses_fails_the_cache_without_retries(
    cluster: Cluster, operator: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What only the API server checks (here: an image name with a trailing space, which the
    emulator refuses as a real API server does) ends in Failed, not in a retry every few seconds."""
    serve = cluster.emulator._handle

    async def refuse_bad_images(request: kmock.Request) -> Any:
        if request.action == kmock.action.CREATE and request.resource == resource_key(kube.DEPLOYMENTS):
            image = request.data["spec"]["template"]["spec"]["containers"][0]["image"]
            if image != image.strip():
                raise kmock.KubernetesError(status=422, reason="Invalid", message=(
                    f'Deployment.apps "{request.data["metadata"]["name"]}" is invalid: spec.template.spec.'
                    f'containers[0].image: Invalid value: "{image}": must not have leading or trailing whitespace'))
        return await serve(request)

    monkeypatch.setattr(cluster.emulator, "_handle", refuse_bad_images)
    await cluster.create_cache("spaced", {"model": MODEL, "vllm": {"image": "vllm/vllm-openai:v0.6.3 "}})
    await cluster.wait_for(phase_is(cluster, "spaced", "Failed"), what="Failed")
    message = condition(cluster.cache("spaced"), "Ready")["message"]
    assert "the API server refused a child built from this spec (HTTP 422" in message
    assert "must not have leading or trailing whitespace" in message
    await cluster.settle()
    assert_handled_once(cluster, "spaced")
    assert cluster.obj(kube.DEPLOYMENTS, "spaced-vllm-2024-09-25") is None
    await cluster.patch_cache("spaced", {"vllm": {"image": "vllm/vllm-openai:v0.6.3"}})
    await cluster.wait_for(lambda: cluster.obj(kube.DEPLOYMENTS, "spaced-vllm-2024-09-25"), what="the Deployment")
    await cluster.wait_for(phase_is(cluster, "spaced", "Provisioning"), what="Provisioning after the fix")
