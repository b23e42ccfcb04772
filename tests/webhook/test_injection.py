"""The pure injection: what a pod looks like after the webhook, in native and classic form."""

from __future__ import annotations

import copy

import jsonpatch
import pytest
from llmcache_operator.settings import DEFAULT_SIDECAR_IMAGE, OperatorConfig
from llmcache_operator.webhook import (
    CONTAINER_NAME,
    InjectionOptions,
    Review,
    injected_pod,
    is_injected,
    requested_cache,
    review_pod,
    sidecar_container,
)

from tests.webhook.pods import CACHE_SPEC, app_pod, cache_context, validate_pod

NATIVE = InjectionOptions(native_sidecar=True)
CLASSIC = InjectionOptions(native_sidecar=False)
DEMO = cache_context()


def env_of(container: dict) -> dict:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def test_native_form_puts_the_sidecar_first_among_init_containers() -> None:
    pod = injected_pod(app_pod(), DEMO, NATIVE)
    init = pod["spec"]["initContainers"]
    assert [c["name"] for c in init] == [CONTAINER_NAME, "migrate"]
    assert init[0]["restartPolicy"] == "Always"
    assert "startupProbe" in init[0]
    assert CONTAINER_NAME not in [c["name"] for c in pod["spec"]["containers"]]
    validate_pod(pod)


def test_classic_form_appends_a_regular_container() -> None:
    pod = injected_pod(app_pod(), DEMO, CLASSIC)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "worker", CONTAINER_NAME]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["migrate"]
    sidecar = pod["spec"]["containers"][-1]
    assert "restartPolicy" not in sidecar and "startupProbe" not in sidecar
    validate_pod(pod)


def test_every_app_container_gets_the_base_url_unless_it_sets_one() -> None:
    pod = injected_pod(app_pod(base_url="http://elsewhere/v1"), DEMO, NATIVE)
    app, worker = pod["spec"]["containers"]
    assert env_of(app)["OPENAI_BASE_URL"] == "http://elsewhere/v1"
    assert env_of(app)["MODEL"] == "llama"
    assert env_of(worker)["OPENAI_BASE_URL"] == "http://127.0.0.1:8081/v1"
    assert "OPENAI_BASE_URL" not in env_of(pod["spec"]["initContainers"][1])


def test_sidecar_follows_the_contract_names() -> None:
    sidecar = sidecar_container(cache_context({**CACHE_SPEC, "redis": {"mode": "managed"}}), NATIVE)
    env = env_of(sidecar)
    assert env["LLMCACHE_CONFIG"] == "/etc/llmcache/config.yaml"
    assert env["LLMCACHE_LISTEN"] == "127.0.0.1:8081"
    assert env["LLMCACHE_METRICS_LISTEN"] == "0.0.0.0:9091"
    assert env["LLMCACHE_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "demo-redis", "key": "password", "optional": True}}
    assert env["LLMCACHE_ADMIN_TOKEN"] == {"secretKeyRef": {"name": "demo-admin", "key": "token", "optional": True}}
    assert [p["containerPort"] for p in sidecar["ports"]] == [8081, 9091]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert sidecar[probe]["httpGet"]["port"] == 9091
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"] == {"drop": ["ALL"]} and security["allowPrivilegeEscalation"] is False
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts["llmcache-config"] == {"name": "llmcache-config", "mountPath": "/etc/llmcache", "readOnly": True}


def test_config_comes_from_the_caches_configmap() -> None:
    pod = injected_pod(app_pod(), DEMO, NATIVE)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["llmcache-config"]["configMap"]["name"] == "demo-sidecar"
    assert "data" in volumes


def test_external_redis_has_no_password_secret() -> None:
    sidecar = sidecar_container(cache_context({**CACHE_SPEC, "redis": {"mode": "external", "url": "redis://r:6379/0"}}), NATIVE)
    assert "LLMCACHE_REDIS_PASSWORD" not in env_of(sidecar)


def test_sidecar_image_from_the_spec_wins() -> None:
    spec = {**CACHE_SPEC, "sidecar": {"image": "registry.local/sidecar:gpu"}}
    assert sidecar_container(cache_context(spec), NATIVE)["image"] == "registry.local/sidecar:gpu"
    assert sidecar_container(DEMO, NATIVE)["image"] == DEFAULT_SIDECAR_IMAGE


@pytest.mark.parametrize(("device", "gpus"), [("cuda", 1), ("cpu", None), ("auto", None)])
def test_gpu_follows_the_embedding_device(device: str, gpus: int | None) -> None:
    spec = {**CACHE_SPEC, "embedding": {"device": device}}
    resources = sidecar_container(cache_context(spec), NATIVE)["resources"]
    assert resources.get("limits", {}).get("nvidia.com/gpu") == gpus
    assert "nvidia.com/gpu" not in resources.get("requests", {})
    validate_pod(injected_pod(app_pod(), cache_context(spec), NATIVE))


def test_cpu_device_drops_a_gpu_from_the_given_resources() -> None:
    spec = {**CACHE_SPEC, "embedding": {"device": "cpu"}, "sidecar": {"resources": {"limits": {"nvidia.com/gpu": 1, "memory": "2Gi"}}}}
    cache = cache_context(spec)
    assert sidecar_container(cache, NATIVE)["resources"] == {"limits": {"memory": "2Gi"}}
    assert cache.spec.sidecar.resources.limits["nvidia.com/gpu"] == 1  # the spec is not mutated


@pytest.mark.parametrize("options", [NATIVE, CLASSIC], ids=["native", "classic"])
def test_injecting_twice_changes_nothing(options: InjectionOptions) -> None:
    once = injected_pod(app_pod(), DEMO, options)
    assert is_injected(once)
    assert once["metadata"]["annotations"]["llmcache.dev/injected"] == "true"
    assert injected_pod(once, DEMO, options) == once
    assert jsonpatch.JsonPatch.from_diff(once, injected_pod(once, DEMO, options)).patch == []


def test_a_pod_with_the_container_already_counts_as_injected() -> None:
    pod = app_pod()
    pod["spec"]["containers"].append({"name": CONTAINER_NAME, "image": "x"})
    assert is_injected(pod)


def test_the_input_pod_is_not_mutated() -> None:
    pod = app_pod()
    before = copy.deepcopy(pod)
    injected_pod(pod, DEMO, NATIVE)
    assert pod == before


def test_requested_cache_prefers_the_annotation_then_the_label() -> None:
    assert requested_cache(app_pod(annotation="a", label="b")) == "a"
    assert requested_cache(app_pod(annotation=None, label="b")) == "b"
    assert requested_cache(app_pod(annotation=None)) is None
    assert requested_cache(app_pod(annotation="  ")) is None
    assert requested_cache({}) is None


def test_review_injects_a_pod_naming_an_existing_cache() -> None:
    review = review_pod(app_pod(), "team-a", {"demo": CACHE_SPEC}.get, OperatorConfig(), NATIVE)
    assert review.warning is None and review.pod is not None
    assert review.pod["spec"]["initContainers"][0]["name"] == CONTAINER_NAME


def test_review_admits_unchanged_with_a_warning_when_the_cache_is_missing() -> None:
    review = review_pod(app_pod(annotation="nope"), "team-a", {"demo": CACHE_SPEC}.get, OperatorConfig(), NATIVE)
    assert review.pod is None and review.reason == "LLMCacheNotFound"
    assert "team-a/nope" in review.warning


def test_review_admits_unchanged_with_a_warning_when_the_cache_is_invalid() -> None:
    bad = {**CACHE_SPEC, "sidecar": {"port": 9090, "metricsPort": 9090}}
    review = review_pod(app_pod(), "team-a", {"demo": bad}.get, OperatorConfig(), NATIVE)
    assert review.pod is None and review.reason == "LLMCacheInvalid"
    assert "port and metricsPort must differ" in review.warning


def test_review_ignores_pods_that_do_not_ask_or_are_injected() -> None:
    specs = {"demo": CACHE_SPEC}.get
    assert review_pod(app_pod(annotation=None), "team-a", specs, OperatorConfig(), NATIVE) == Review()
    injected = injected_pod(app_pod(), DEMO, NATIVE)
    assert review_pod(injected, "team-a", specs, OperatorConfig(), NATIVE) == Review()


def test_review_refuses_to_inject_into_a_pod_using_the_sidecars_ports() -> None:
    pod = app_pod()
    pod["spec"]["containers"][0]["ports"].append({"name": "metrics", "containerPort": 9091})
    review = review_pod(pod, "team-a", {"demo": CACHE_SPEC}.get, OperatorConfig(), NATIVE)
    assert review.pod is None and review.reason == "LLMCachePortConflict"
    assert "port(s) 9091" in review.warning
