"""Pure pieces of the operator: status from children, stats from counters, merge diffs, CLI, settings."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from llmcache_operator import kube, names
from llmcache_operator.__main__ import HANDLER_MODULES, build_registry, operator_settings, parse_args
from llmcache_operator.apply import merge_diff
from llmcache_operator.children import cache_context
from llmcache_operator.runtime import Runtime
from llmcache_operator.settings import DEFAULT_VLLM_IMAGE, OperatorConfig, SettingsError
from llmcache_operator.stats import stats_from_counters
from llmcache_operator.status import (
    EXTERNAL,
    ComponentState,
    failed_status,
    healthy_status,
    redact,
    workload_state,
)

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"
CTX = cache_context("demo", "apps", {"model": {"name": "m", "revision": "r1"}}, OperatorConfig())
READY = ComponentState(True, "Ready", "ok")
WAITING = ComponentState(False, "NotReady", "0/1")


def workload(replicas: int = 1, ready: int = 0, generation: int = 1, observed: int | None = 1,
             updated: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"readyReplicas": ready}
    if observed is not None:
        status["observedGeneration"] = observed
    if updated is not None:
        status["updatedReplicas"] = updated
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas}, "status": status}


def test_workload_readiness_comes_from_its_status() -> None:
    assert workload_state("Deployment", "d", None).reason == "Missing"
    assert not workload_state("Deployment", "d", workload(ready=0)).ready
    assert workload_state("Deployment", "d", workload(replicas=2, ready=2)).ready
    assert not workload_state("Deployment", "d", workload(replicas=2, ready=1)).ready
    stale = workload_state("Deployment", "d", workload(ready=1, generation=3, observed=2))
    assert not stale.ready and stale.reason == "Progressing"
    rolling = workload_state("Deployment", "d", workload(replicas=2, ready=2, updated=1))
    assert not rolling.ready and rolling.reason == "Progressing"


def test_phase_moves_from_provisioning_to_ready_to_degraded() -> None:
    waiting = healthy_status({}, CTX, {"RedisReady": WAITING, "MilvusReady": READY, "VLLMReady": READY}, "r1", 1, NOW)
    assert waiting["phase"] == "Provisioning"
    ready = healthy_status(waiting, CTX, {"RedisReady": READY, "MilvusReady": READY, "VLLMReady": EXTERNAL},
                           "r1", None, LATER)
    assert ready["phase"] == "Ready" and ready["observedGeneration"] == 1
    degraded = healthy_status(ready, CTX, {"RedisReady": WAITING, "MilvusReady": READY, "VLLMReady": READY},
                              "r1", None, LATER)
    assert degraded["phase"] == "Degraded"
    assert degraded["conditions"][0]["message"] == "waiting for RedisReady"


def test_transition_times_change_only_with_the_status() -> None:
    first = healthy_status({}, CTX, {"RedisReady": WAITING, "MilvusReady": READY, "VLLMReady": READY}, "r1", 1, NOW)
    again = healthy_status(first, CTX, {"RedisReady": WAITING, "MilvusReady": READY, "VLLMReady": READY}, "r1", 1,
                           LATER)
    assert again == first  # nothing changed: nothing to patch
    flipped = healthy_status(first, CTX, {"RedisReady": READY, "MilvusReady": READY, "VLLMReady": READY}, "r1", 1,
                             LATER)
    times = {c["type"]: c["lastTransitionTime"] for c in flipped["conditions"]}
    assert times == {"Ready": LATER, "RedisReady": LATER, "MilvusReady": NOW, "VLLMReady": NOW}


def test_failed_status_keeps_the_rest_and_says_why() -> None:
    ready = healthy_status({}, CTX, {"RedisReady": READY, "MilvusReady": READY, "VLLMReady": READY}, "r1", 1, NOW)
    failed = failed_status(ready, "spec.redis: mode external needs url", 2, LATER)
    assert failed["phase"] == "Failed" and failed["observedGeneration"] == 2
    assert failed["conditions"][0] == {"type": "Ready", "status": "False", "reason": "InvalidSpec",
                                       "message": "spec.redis: mode external needs url", "lastTransitionTime": LATER}
    assert failed["endpoints"] == ready["endpoints"] and failed["activeRevision"] == "r1"


def test_endpoints_never_show_passwords() -> None:
    assert redact("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("redis://user:s3cret@host/0") == "redis://user:***@host/0"
    assert redact("http://milvus:19530") == "http://milvus:19530"


def test_stats_from_counters() -> None:
    raw = {b"requests": b"200", b"hitsExact": b"50", b"hitsSemantic": b"30", b"tokensSaved": b"9000", b"x": b"1"}
    assert stats_from_counters(raw) == {"requests": 200, "hitsExact": 50, "hitsSemantic": 30,
                                        "tokensSaved": 9000, "hitRatio": 0.4}
    assert stats_from_counters({}) == {"requests": 0, "hitsExact": 0, "hitsSemantic": 0,
                                       "tokensSaved": 0, "hitRatio": 0.0}
    assert stats_from_counters({"requests": "oops", "hitsExact": "-3"})["hitsExact"] == 0


def test_merge_diff_sends_only_changes_and_nulls_for_removals() -> None:
    old = {"spec": {"replicas": 1, "template": {"a": 1, "b": [1, 2]}, "gone": {"x": 1}}, "keep": "same"}
    new = {"spec": {"replicas": 2, "template": {"a": 1, "b": [1, 3]}}, "keep": "same", "added": {"y": 1}}
    assert merge_diff(old, new) == {"spec": {"replicas": 2, "template": {"b": [1, 3]}, "gone": None},
                                    "added": {"y": 1}}
    assert merge_diff(new, new) == {}


def test_cli_options() -> None:
    assert parse_args([]).clusterwide
    options = parse_args(["-n", "a", "--namespace", "b", "--liveness", "http://0.0.0.0:8080/healthz"])
    assert options.namespaces == ("a", "b") and not options.clusterwide
    assert options.liveness == "http://0.0.0.0:8080/healthz"
    with pytest.raises(SystemExit):
        parse_args(["-n", "a", "--all-namespaces"])


def test_kopf_settings_keep_state_under_our_prefix() -> None:
    settings = operator_settings()
    assert settings.persistence.finalizer == "llmcache.dev/finalizer"
    assert settings.peering.standalone


def test_every_handler_module_registers() -> None:
    registry = build_registry(Runtime(config=OperatorConfig()), HANDLER_MODULES)
    assert isinstance(registry, kopf.OperatorRegistry)


def test_settings_from_env() -> None:
    config = OperatorConfig.from_env({"LLMCACHE_VLLM_IMAGE": "my/vllm:1", "LLMCACHE_STATS_INTERVAL_SECONDS": "5"})
    assert config.vllm_image == "my/vllm:1" and config.stats_interval_seconds == 5.0
    assert OperatorConfig.from_env({}).vllm_image == DEFAULT_VLLM_IMAGE
    with pytest.raises(SettingsError, match="LLMCACHE_STATS_INTERVAL_SECONDS"):
        OperatorConfig.from_env({"LLMCACHE_STATS_INTERVAL_SECONDS": "soon"})


def test_rbac_rules_cover_exactly_the_calls() -> None:
    rules = kube.rbac_rules()
    granted = {(verb, group, resource) for rule in rules for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert granted == set(kube.API_CALLS)
    assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in rules)
    assert ("watch", names.GROUP, "llmcaches") in granted and ("patch", names.GROUP, "llmcaches/status") in granted


async def test_the_client_refuses_calls_missing_from_its_table() -> None:
    api = kube.KubeApi(allowed=frozenset())
    await api.login(kopf.ConnectionInfo(server="http://127.0.0.1:1"))
    with pytest.raises(PermissionError, match="OPERATOR_CALLS"):
        await api.get(kube.SECRETS, "apps", "x")
    await api.close()
