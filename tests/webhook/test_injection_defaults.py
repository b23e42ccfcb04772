"""The injected sidecar under the operator's cluster-wide defaults: resources and the GPU image."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llmcache_operator.context import CacheContext
from llmcache_operator.settings import (
    DEFAULT_SIDECAR_GPU_IMAGE,
    DEFAULT_SIDECAR_IMAGE,
    OperatorConfig,
)
from llmcache_operator.spec import parse_spec
from llmcache_operator.webhook import (
    InjectionOptions,
    injected_pod,
    review_pod,
    sidecar_container,
)

from tests.webhook.pods import CACHE_SPEC, app_pod, validate_pod

NATIVE = InjectionOptions(native_sidecar=True)
ADMIN = OperatorConfig.from_env({
    "LLMCACHE_SIDECAR_IMAGE": "registry.local/sidecar:2.0",
    "LLMCACHE_SIDECAR_GPU_IMAGE": "registry.local/sidecar:2.0-gpu",
    "LLMCACHE_SIDECAR_RESOURCES": json.dumps({"requests": {"cpu": "50m", "memory": "384Mi"}, "limits": {"memory": "768Mi"}}),
})


def sidecar(spec_changes: dict[str, Any], config: OperatorConfig = ADMIN) -> dict[str, Any]:
    spec = {**CACHE_SPEC, **spec_changes}
    return sidecar_container(CacheContext("demo", "team-a", parse_spec(spec), config), NATIVE)


def test_the_admins_default_resources_apply_when_the_spec_sets_none() -> None:
    assert sidecar({})["resources"] == {"requests": {"cpu": "50m", "memory": "384Mi"}, "limits": {"memory": "768Mi"}}


def test_the_built_in_default_applies_without_an_admin_default() -> None:
    assert sidecar({}, OperatorConfig())["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def test_the_specs_resources_win_whole() -> None:
    resources = sidecar({"sidecar": {"port": 8081, "metricsPort": 9091, "resources": {"limits": {"memory": "2Gi"}}}})["resources"]
    assert resources == {"limits": {"memory": "2Gi"}}


def test_cuda_adds_one_gpu_to_the_default_resources() -> None:
    resources = sidecar({"embedding": {"device": "cuda"}})["resources"]
    assert resources == {"requests": {"cpu": "50m", "memory": "384Mi"}, "limits": {"memory": "768Mi", "nvidia.com/gpu": 1}}
    assert ADMIN.sidecar_resources.limits == {"memory": "768Mi"}  # the shared default is not mutated


@pytest.mark.parametrize(("device", "image"), [
    ("cuda", "registry.local/sidecar:2.0-gpu"),
    ("cpu", "registry.local/sidecar:2.0"),
    ("auto", "registry.local/sidecar:2.0"),  # auto asks for no GPU: the CPU build
])
def test_the_image_follows_the_embedding_device(device: str, image: str) -> None:
    assert sidecar({"embedding": {"device": device}})["image"] == image


def test_the_built_in_images_follow_the_embedding_device() -> None:
    assert sidecar({"embedding": {"device": "cuda"}}, OperatorConfig())["image"] == DEFAULT_SIDECAR_GPU_IMAGE
    assert sidecar({"embedding": {"device": "cpu"}}, OperatorConfig())["image"] == DEFAULT_SIDECAR_IMAGE


def test_the_specs_image_wins_even_on_cuda() -> None:
    spec = {"embedding": {"device": "cuda"}, "sidecar": {"port": 8081, "metricsPort": 9091, "image": "team/sidecar:custom"}}
    assert sidecar(spec)["image"] == "team/sidecar:custom"


def test_a_reviewed_gpu_pod_is_valid_and_uses_the_gpu_build() -> None:
    spec = {**CACHE_SPEC, "embedding": {"device": "cuda"}}
    review = review_pod(app_pod(), "team-a", {"demo": spec}.get, ADMIN, NATIVE)
    assert review.pod is not None
    (injected,) = [c for c in review.pod["spec"]["initContainers"] if c["name"] == "llmcache-sidecar"]
    assert injected["image"] == "registry.local/sidecar:2.0-gpu"
    assert injected["resources"]["limits"]["nvidia.com/gpu"] == 1
    validate_pod(review.pod)
    assert injected_pod(review.pod, CacheContext("demo", "team-a", parse_spec(spec), ADMIN), NATIVE) == review.pod
