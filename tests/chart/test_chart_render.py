"""The chart renders with real Helm for every value set, lints clean, and every manifest is valid."""

from __future__ import annotations

import re
from typing import Any

import helm_python
import kubernetes_validate
import pytest

from tests.chart.helmchart import CHART_DIR, KUBE_VERSIONS, NAMESPACE, RELEASE, VALUE_SETS, find, manifests, one, operator_container, render

#: Kinds kubernetes-validate has no schema for; checked by their own tests (test_chart_webhook).
CERT_MANAGER_KINDS = {("cert-manager.io/v1", "Certificate"), ("cert-manager.io/v1", "Issuer")}


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_reports_no_error(value_set: str) -> None:
    report = helm_python.lint(CHART_DIR, VALUE_SETS[value_set], strict=True, namespace=NAMESPACE, kube_version="v1.29.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_lint_without_a_namespace_reports_no_error() -> None:
    report = helm_python.lint(CHART_DIR, {}, strict=True)
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_manifest_passes_kubernetes_validate(value_set: str) -> None:
    objects = manifests(VALUE_SETS[value_set])
    assert objects
    checked = 0
    for obj in objects:
        assert obj["metadata"]["name"], obj
        if (obj["apiVersion"], obj["kind"]) in CERT_MANAGER_KINDS:
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_namespaced_objects_go_to_the_release_namespace(value_set: str) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "MutatingWebhookConfiguration"}
    for obj in manifests(VALUE_SETS[value_set]):
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"], obj["metadata"]
        elif obj["kind"] in ("Role", "RoleBinding"):
            assert obj["metadata"]["namespace"] in {NAMESPACE, *VALUE_SETS[value_set].get("operator", {}).get("watchNamespaces", [])}
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]


def test_defaults_run_one_hardened_operator_with_kopf_liveness() -> None:
    objects = manifests()
    deployment = one(objects, "Deployment", f"{RELEASE}-llmcache-operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = operator_container(objects)
    assert container["image"] == "ghcr.io/llmcache/llmcache-operator:0.1.0"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert f"--liveness=http://0.0.0.0:{ports['health']}/healthz" in container["args"]
    assert "--all-namespaces" in container["args"]
    assert container["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]


def test_custom_images_and_resources_reach_the_deployment() -> None:
    values = VALUE_SETS["custom-images-resources"]
    objects = manifests(values)
    container = operator_container(objects)
    assert container["image"] == "registry.example.com/llmcache/operator@sha256:" + "a" * 64
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == values["operator"]["resources"]
    assert "--debug" in container["args"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]


def test_namespace_scoped_operator_watches_only_its_namespaces() -> None:
    objects = manifests(VALUE_SETS["namespace-scoped"])
    args = operator_container(objects)["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]


def test_without_service_account_creation_the_named_one_is_used() -> None:
    objects = manifests(VALUE_SETS["external-service-account"])
    assert not find(objects, "ServiceAccount")
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"
    for binding in find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ops-sa", "namespace": NAMESPACE}]


def test_notes_tell_the_user_what_to_do_next() -> None:
    notes = render()["llmcache/templates/NOTES.txt"]
    assert f"rollout status deployment/{RELEASE}-llmcache-operator" in notes
    assert "kind: LLMCache" in notes and "llmcache.dev/inject" in notes
    assert "did not install the LLMCache CRD" in render(VALUE_SETS["no-crds"])["llmcache/templates/NOTES.txt"]


BAD_VALUES: dict[str, dict[str, Any]] = {
    "unknown top-level key": {"operatr": {}},
    "misspelt nested key": {"webhook": {"failurePolicyy": "Fail"}},
    "failure policy outside the enum": {"webhook": {"failurePolicy": "Maybe"}},
    "timeout above the API server's limit": {"webhook": {"timeoutSeconds": 60}},
    "port out of range": {"webhook": {"port": 70000}},
    "port as a string": {"operator": {"healthPort": "8080"}},
    "namespace that is not a DNS label": {"operator": {"watchNamespaces": ["Team_A"]}},
    "image with a space": {"defaults": {"sidecar": {"image": "my image:1"}}},
    "empty image": {"defaults": {"vllm": {"image": ""}}},
    "malformed digest": {"operator": {"image": {"repository": "r", "digest": "sha256:xyz"}}},
    "resources with a bad quantity": {"operator": {"resources": {"limits": {"memory": "lots"}}}},
    "crds.install not a boolean": {"crds": {"install": "yes"}},
    "issuerRef without a name": {"webhook": {"certMode": "cert-manager", "certManager": {"issuerRef": {"kind": "ClusterIssuer"}}}},
    "unknown certificate mode": {"webhook": {"certMode": "letsencrypt"}},
    "default resources with a bad quantity": {"defaults": {"redis": {"resources": {"limits": {"memory": "lots"}}}}},
    "default resources with a misspelt key": {"defaults": {"vllm": {"resources": {"limit": {"cpu": 1}}}}},
    "empty GPU sidecar image": {"defaults": {"sidecar": {"gpuImage": ""}}},
    "stats interval of zero": {"defaults": {"statsIntervalSeconds": 0}},
    "negative rollout deadline": {"defaults": {"rolloutDeadlineSeconds": -1}},
    "unknown log level": {"operator": {"logLevel": "loud"}},
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(case: str) -> None:
    with helm_python.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(chart.merge_values({}))  # the defaults themselves pass
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema(chart.merge_values(BAD_VALUES[case]))
    with pytest.raises(helm_python.HelmError):
        render(BAD_VALUES[case])


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_value_set_passes_the_schema(value_set: str) -> None:
    with helm_python.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(chart.merge_values(VALUE_SETS[value_set]))


def test_values_are_documented_field_by_field() -> None:
    """Every value that is not a group of other values has a comment right above it."""
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    undocumented = []
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z]\w*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = match.groups()
        next_line = next((later for later in lines[index + 1:] if later.strip()), "")
        is_group = not rest.strip() and len(next_line) - len(next_line.lstrip()) > len(indent)
        documented = index > 0 and lines[index - 1].strip().startswith("#")
        # A group of plain settings under a documented group (resources: requests: ...) is data.
        if not is_group and not documented and not _inside_documented_block(lines, index, len(indent)):
            undocumented.append(key)
    assert undocumented == []


def _inside_documented_block(lines: list[str], index: int, indent: int) -> bool:
    """True when an enclosing key (less indented) is a documented value, e.g. `resources`."""
    for earlier in range(index - 1, -1, -1):
        line = lines[earlier]
        if not line.strip() or line.strip().startswith("#"):
            continue
        depth = len(line) - len(line.lstrip())
        if depth < indent:
            documented = earlier > 0 and lines[earlier - 1].strip().startswith("# --")
            return documented or _inside_documented_block(lines, earlier, depth)
    return False
