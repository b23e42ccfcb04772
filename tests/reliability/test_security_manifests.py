"""The operator's security promises, on the manifests it builds and the pods the webhook injects:
secrets only in Secrets, a password on managed Redis, NetworkPolicies around managed Redis and
Milvus, and locked-down containers (documented exceptions: images that must run as root)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml
from llmcache_operator import names
from llmcache_operator.networkpolicy import BACKEND_PORTS, OPERATOR_POD_LABELS
from llmcache_operator.redis import redis_args
from llmcache_operator.sidecar_config import CONFIG_KEY
from llmcache_operator.webhook import InjectionOptions, injected_pod

from tests.chart import helmchart
from tests.operator.test_builders import K8S_VERSIONS, SPECS, all_manifests, context

SECRET_VALUE = "s3cret"  # what all_manifests puts into the generated Secrets
#: Containers whose images run as root, and so cannot promise runAsNonRoot / a read-only root
#: filesystem (docs/security.md): Milvus standalone and vLLM.
ROOT_IMAGES = {"milvus", "vllm"}
APP_POD: dict[str, Any] = {"metadata": {"name": "app", "namespace": "apps", "annotations": {"llmcache.dev/inject": "demo"}},
                           "spec": {"containers": [{"name": "app", "image": "app:1"}]}}


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def pod_specs(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["spec"]["template"]["spec"] for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]


def injected(spec: dict[str, Any], native: bool = False) -> dict[str, Any]:
    return injected_pod(APP_POD, context(spec), InjectionOptions(native_sidecar=native))


@pytest.mark.parametrize("case", sorted(SPECS))
def test_secrets_live_only_in_secrets(case: str) -> None:
    manifests = all_manifests(SPECS[case])
    for manifest in manifests:
        if manifest["kind"] != "Secret":
            assert SECRET_VALUE not in yaml.safe_dump(manifest), (manifest["kind"], manifest["metadata"]["name"])
    config = yaml.safe_load(by_kind(manifests, "ConfigMap")["demo-sidecar"]["data"][CONFIG_KEY])
    assert not {"redis_password", "admin_token"} & config.keys()
    env = {item["name"]: item for item in injected(SPECS[case])["spec"]["containers"][-1]["env"]}
    admin = env["LLMCACHE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert (admin["name"], admin["key"]) == ("demo-admin", "token")
    if "LLMCACHE_REDIS_PASSWORD" in env:
        assert env["LLMCACHE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "demo-redis"
    assert all("value" not in item or SECRET_VALUE not in item["value"] for item in env.values())


def test_managed_redis_requires_the_generated_password() -> None:
    ctx = context(SPECS["defaults"])
    args = redis_args(ctx)
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    manifests = all_manifests(SPECS["defaults"])
    redis = by_kind(manifests, "StatefulSet")["demo-redis"]["spec"]["template"]["spec"]["containers"][0]
    password = {e["name"]: e for e in redis["env"]}["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "demo-redis", "key": "password"}
    assert by_kind(manifests, "Secret")["demo-redis"]["data"]["password"]
    sidecar = {e["name"]: e for e in injected(SPECS["defaults"])["spec"]["containers"][-1]["env"]}
    ref = sidecar["LLMCACHE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (password["name"], password["key"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_network_policies_admit_only_the_caches_sidecars_and_the_operator(version: str) -> None:
    manifests = all_manifests(SPECS["defaults"])
    policies = by_kind(manifests, "NetworkPolicy")
    assert set(policies) == {"demo-redis", "demo-milvus"}
    for component in ("redis", "milvus"):
        policy = policies[f"demo-{component}"]
        kubernetes_validate.validate(policy, version, strict=True)
        spec = policy["spec"]
        workload = by_kind(manifests, "StatefulSet")[f"demo-{component}"]
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert spec["policyTypes"] == ["Ingress"]
        (rule,) = spec["ingress"]
        assert {p["port"] for p in rule["ports"]} == set(BACKEND_PORTS[component])
        container_ports = {p["containerPort"] for p in workload["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert set(BACKEND_PORTS[component]) == container_ports
        sidecars, operator = rule["from"]
        assert sidecars == {"podSelector": {"matchLabels": {names.CLIENT_LABEL: "demo"}}}, "same namespace only"
        assert operator["podSelector"]["matchLabels"] == OPERATOR_POD_LABELS
    assert not by_kind(all_manifests(SPECS["all-external"]), "NetworkPolicy"), "nothing to guard when external"


@pytest.mark.parametrize("native", [False, True])
def test_injected_pods_carry_the_label_the_policies_admit(native: bool) -> None:
    pod = injected(SPECS["defaults"], native)
    assert pod["metadata"]["labels"][names.CLIENT_LABEL] == "demo"
    assert injected_pod(pod, context(SPECS["defaults"]), InjectionOptions(native_sidecar=native)) == pod


def test_the_chart_labels_the_operator_pod_as_the_policies_expect() -> None:
    objects = helmchart.manifests()
    deployment = helmchart.one(objects, "Deployment")
    assert OPERATOR_POD_LABELS.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec.get("containers") or []) + list(pod_spec.get("initContainers") or [])


@pytest.mark.parametrize("case", sorted(SPECS))
def test_every_container_we_create_is_locked_down(case: str) -> None:
    pods = pod_specs(all_manifests(SPECS[case]))
    sidecar_pods = [injected(SPECS[case], native)["spec"] for native in (False, True)]
    for pod_spec in pods + sidecar_pods:
        assert pod_spec.get("automountServiceAccountToken") is False or pod_spec in sidecar_pods
        for container in _containers(pod_spec):
            if container["name"] == "app":
                continue
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            if container["name"] in ROOT_IMAGES:
                continue
            assert context["runAsNonRoot"] is True and context["readOnlyRootFilesystem"] is True, container["name"]
            user = context.get("runAsUser", (pod_spec.get("securityContext") or {}).get("runAsUser"))
            assert user and user > 0
            writable = {m["mountPath"] for m in container.get("volumeMounts", []) if not m.get("readOnly")}
            assert writable <= {"/data", "/tmp"}, writable
