"""Render the chart with real Helm (helm-python-sdk) and split the result into manifests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "llmcache"
RELEASE = "llmc"
NAMESPACE = "llmcache-system"
#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) is validated, and a recent one.
KUBE_VERSIONS = ("1.29", "1.33")

#: Value sets every rendering test runs over: the defaults and the non-default choices a user makes.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"webhook": {"certMode": "cert-manager"}},
    "cert-manager-cluster-issuer": {
        "webhook": {"certMode": "cert-manager", "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}}}
    },
    "provided-certificate": {"webhook": {"certMode": "provided", "tlsSecretName": "corp-webhook-tls"}},
    "no-crds": {"crds": {"install": False}},
    "custom-images-resources": {
        "operator": {
            "image": {"repository": "registry.example.com/llmcache/operator", "digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
            "resources": {"requests": {"cpu": "250m", "memory": "300Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "imagePullSecrets": [{"name": "regcred"}],
            "logLevel": "debug",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        },
        "defaults": {
            "sidecar": {
                "image": "registry.example.com/llmcache/sidecar:1.2.3",
                "gpuImage": "registry.example.com/llmcache/sidecar:1.2.3-gpu",
                "resources": {"requests": {"cpu": "50m", "memory": "300Mi"}, "limits": {"memory": "2Gi"}},
            },
            "redis": {"image": "registry.example.com/redis:7.4.1", "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}},
            "milvus": {"image": "registry.example.com/milvus:v2.4.17", "resources": {"requests": {"memory": "4Gi"}}},
            "vllm": {"image": "registry.example.com/vllm-openai:v0.7.0", "resources": {"requests": {"cpu": "4", "memory": "24Gi"}}},
            "statsIntervalSeconds": 15,
            "rolloutDeadlineSeconds": 5400,
        },
    },
    "namespace-scoped": {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
    "no-webhook": {"webhook": {"enabled": False}},
    "external-service-account": {"serviceAccount": {"create": False, "name": "ops-sa"}, "rbac": {"create": True}},
    "fail-closed": {"webhook": {"failurePolicy": "Fail", "timeoutSeconds": 10, "nativeSidecar": "false", "extraSANs": ["10.0.0.5"]}},
}


#: The chart's own example value files (charts/llmcache/ci/*-values.yaml, chart-testing's layout).
VALUE_SETS.update({
    f"ci/{path.stem}": yaml.safe_load(path.read_text()) for path in sorted((CHART_DIR / "ci").glob("*-values.yaml"))
})


def render(values: Mapping[str, Any] | None = None, *, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would produce it."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        return chart.render(dict(values or {}), name=RELEASE, namespace=namespace, is_install=True)


def manifests(values: Mapping[str, Any] | None = None, *, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders (NOTES.txt and empty documents left out)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render(values, namespace=namespace).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def container_env(container: Mapping[str, Any], namespace: str = NAMESPACE) -> dict[str, str]:
    """The container's environment as the kubelet would set it (fieldRef to the namespace resolved)."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = namespace
    return env


def iter_rules(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(role, rule) for every rule of every Role and ClusterRole."""
    for role in objects:
        if role["kind"] in ("Role", "ClusterRole"):
            for rule in role.get("rules") or []:
                yield role, rule
