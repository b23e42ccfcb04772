"""What the end-to-end suite (e2e/, run only against a real cluster) puts into the cluster is
valid here already: built-in kinds pass kubernetes-validate, the LLMCache the CRD schema and
the operator, the app is injectable, and the test server's script is the repository's."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import helm_python
import jsonschema
import kubernetes_validate
import pytest

from e2e.cluster import CHART_DIR as E2E_CHART_DIR
from e2e.workloads import CALL_SCRIPT, UPSTREAM_SOURCE, app, llmcache, release_values, upstream_objects
from llmcache_operator.children import cache_context
from llmcache_operator.settings import OperatorConfig
from llmcache_operator.webhook import requested_cache
from tests.chart.helmchart import CHART_DIR, KUBE_VERSIONS, manifests, operator_container
from tests.chart.test_examples import crd_schema, unknown_fields
from tests.conftest import free_port, wait_for_port


def test_e2e_builtin_objects_pass_kubernetes_validate() -> None:
    for obj in [*upstream_objects("ns", "llmcache-sidecar:e2e"), app("ns", "llmcache-sidecar:e2e")]:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("managed_milvus", [False, True])
def test_e2e_cache_passes_the_crd_and_the_operator(managed_milvus: bool) -> None:
    cache = llmcache("ns", "r1", managed_milvus)
    body = {"spec": cache["spec"]}
    jsonschema.Draft4Validator(crd_schema()).validate(body)
    assert unknown_fields(body, crd_schema()) == []
    ctx = cache_context(cache["metadata"]["name"], "ns", cache["spec"], OperatorConfig())
    assert ctx.spec.vllm.is_external


def test_e2e_app_asks_for_the_e2e_cache() -> None:
    assert requested_cache(app("ns", "img")["spec"]["template"]) == llmcache("ns", "r1", False)["metadata"]["name"]


def test_e2e_scripts_are_python_and_the_server_is_the_tests_one() -> None:
    ast.parse(CALL_SCRIPT)
    (configmap,) = [o for o in upstream_objects("ns", "img") if o["kind"] == "ConfigMap"]
    assert configmap["data"]["upstream.py"] == UPSTREAM_SOURCE.read_text()
    assert 'if __name__ == "__main__":' in configmap["data"]["upstream.py"]


def test_the_test_server_runs_alone_as_the_e2e_deployment_starts_it(tmp_path: Path) -> None:
    """The e2e Deployment runs the file from a ConfigMap, outside this repository's packages."""
    (deployment,) = [o for o in upstream_objects("ns", "img") if o["kind"] == "Deployment"]
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    script = tmp_path / "upstream.py"
    script.write_text(UPSTREAM_SOURCE.read_text())
    port = free_port()
    args = [sys.executable if part == "python" else part for part in command]
    args = [str(script) if part.endswith("upstream.py") else part for part in args]
    args[args.index("--port") + 1] = str(port)
    args[args.index("--host") + 1] = "127.0.0.1"
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout=20)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as response:
            assert json.load(response)["data"]
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("install_crd", [True, False])
def test_e2e_release_installs_with_the_images_under_test(install_crd: bool) -> None:
    """A client-side dry-run install (Helm's whole install path but the API calls) of the e2e values."""
    assert E2E_CHART_DIR == CHART_DIR
    values = release_values("llmcache-operator:e2e", "llmcache-sidecar:e2e", install_crd)
    with helm_python.Config(kubeconfig_path="/nonexistent", namespace="e2e") as helm:
        release = helm.install(CHART_DIR, "llmcache-e2e", values, namespace="e2e", dry_run="client")
    assert "kind: Deployment" in release["manifest"]
    assert ("kind: CustomResourceDefinition" in release["manifest"]) is install_crd
    container = operator_container(manifests(values))
    assert container["image"] == "llmcache-operator:e2e"
    assert {"name": "LLMCACHE_SIDECAR_IMAGE", "value": "llmcache-sidecar:e2e"} in container["env"]
