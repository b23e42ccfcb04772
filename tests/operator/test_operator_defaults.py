"""Cluster-wide defaults from the operator's environment: resources of each component, start-up checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest
from llmcache_operator.children import cache_context, desired_state
from llmcache_operator.milvus import milvus_statefulset
from llmcache_operator.redis import redis_statefulset
from llmcache_operator.settings import (
    DEFAULT_SIDECAR_RESOURCES,
    OperatorConfig,
    SettingsError,
)
from llmcache_operator.spec import Resources
from llmcache_operator.vllm import vllm_deployment

MODEL = {"name": "meta-llama/Llama-3.1-8B-Instruct", "revision": "r1"}
ADMIN_DEFAULTS = {
    "LLMCACHE_REDIS_RESOURCES": json.dumps({"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}),
    "LLMCACHE_MILVUS_RESOURCES": json.dumps({"requests": {"cpu": "1", "memory": "4Gi"}}),
    "LLMCACHE_VLLM_RESOURCES": json.dumps({"requests": {"cpu": 4, "memory": "32Gi"}, "limits": {"memory": "48Gi"}}),
}
CONFIG = OperatorConfig.from_env(ADMIN_DEFAULTS)


def container(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]["containers"][0]


def test_resources_from_env_are_json_resource_requirements() -> None:
    assert CONFIG.redis_resources == Resources(requests={"cpu": "250m"}, limits={"memory": "1Gi"})
    assert CONFIG.vllm_resources.requests == {"cpu": 4, "memory": "32Gi"}
    assert CONFIG.sidecar_resources == DEFAULT_SIDECAR_RESOURCES  # unset: the built-in default
    assert OperatorConfig.from_env({"LLMCACHE_SIDECAR_RESOURCES": "{}"}).sidecar_resources.as_dict() == {}
    assert OperatorConfig().redis_resources.as_dict() == {}  # managed backends: none unless set


@pytest.mark.parametrize(("raw", "problem"), [
    ("2Gi", "Invalid JSON"),
    ('["cpu"]', "object"),
    ('{"limit": {"memory": "1Gi"}}', "limit: Extra inputs"),
    ('{"limits": {"memory": "lots"}}', "'lots' is not a Kubernetes quantity"),
])
def test_a_bad_resources_value_names_the_variable_and_the_problem(raw: str, problem: str) -> None:
    with pytest.raises(SettingsError, match="LLMCACHE_MILVUS_RESOURCES") as caught:
        OperatorConfig.from_env({"LLMCACHE_MILVUS_RESOURCES": raw})
    assert problem in str(caught.value)


def test_the_admins_defaults_apply_when_the_spec_sets_no_resources() -> None:
    ctx = cache_context("demo", "apps", {"model": MODEL, "vllm": {"gpus": 2}}, CONFIG)
    assert container(redis_statefulset(ctx))["resources"] == {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}
    assert container(milvus_statefulset(ctx))["resources"] == {"requests": {"cpu": "1", "memory": "4Gi"}}
    # vLLM: the GPU limit of spec.vllm.gpus is merged into the default, as into the spec's own.
    assert container(vllm_deployment(ctx, "r1"))["resources"] == {
        "requests": {"cpu": 4, "memory": "32Gi"}, "limits": {"memory": "48Gi", "nvidia.com/gpu": 2},
    }
    for manifest in desired_state(ctx, "r1", frozenset({"r1"})).manifests:
        kubernetes_validate.validate(manifest, "1.29", strict=True)


def test_the_specs_resources_win_whole_over_the_defaults() -> None:
    spec = {
        "model": MODEL,
        "redis": {"resources": {"limits": {"memory": "3Gi"}}},
        "milvus": {"resources": {"limits": {"cpu": "2"}}},
        "vllm": {"gpus": 1, "resources": {"requests": {"cpu": "8"}}},
    }
    ctx = cache_context("demo", "apps", spec, CONFIG)
    assert container(redis_statefulset(ctx))["resources"] == {"limits": {"memory": "3Gi"}}
    assert container(milvus_statefulset(ctx))["resources"] == {"limits": {"cpu": "2"}}
    assert container(vllm_deployment(ctx, "r1"))["resources"] == {"requests": {"cpu": "8"}, "limits": {"nvidia.com/gpu": 1}}


def test_without_defaults_the_managed_backends_set_no_resources() -> None:
    ctx = cache_context("demo", "apps", {"model": MODEL, "vllm": {"gpus": 0}}, OperatorConfig())
    assert "resources" not in container(redis_statefulset(ctx))
    assert "resources" not in container(milvus_statefulset(ctx))
    assert "resources" not in container(vllm_deployment(ctx, "r1"))


@pytest.mark.parametrize(("variable", "value"), [
    ("LLMCACHE_REDIS_RESOURCES", '{"limits": {"memory": "lots"}}'),
    ("LLMCACHE_WEBHOOK_TIMEOUT_SECONDS", "90"),  # read when the webhook's handlers register
    ("LLMCACHE_WEBHOOK_CERT_MODE", "letsencrypt"),
])
def test_a_bad_setting_stops_the_operator_with_a_message_and_code_2(variable: str, value: str) -> None:
    env = {**os.environ, variable: value, "KUBECONFIG": os.devnull}
    done = subprocess.run(
        [sys.executable, "-m", "llmcache_operator", "--namespace", "apps"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert variable in done.stderr
    assert "Traceback" not in done.stderr
