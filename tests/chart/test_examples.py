"""The examples are valid: LLMCaches against the CRD's schema and the operator's spec model,
built-in kinds against Kubernetes' schemas, and the app still valid once the sidecar is injected."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from llmcache_operator.children import cache_context
from llmcache_operator.settings import OperatorConfig
from llmcache_operator.spec import parse_spec
from llmcache_operator.webhook import INJECTED_ANNOTATION, InjectionOptions, injected_pod, requested_cache
from tests.chart.helmchart import KUBE_VERSIONS, REPO

EXAMPLES = REPO / "examples"
CRD_FILE = REPO / "crds" / "llmcache.dev_llmcaches.yaml"


def load_examples() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                found.append((f"{path.relative_to(EXAMPLES)}#{index}", doc))
    return found


EXAMPLE_DOCS = load_examples()
LLMCACHES = [(name, doc) for name, doc in EXAMPLE_DOCS if doc["kind"] == "LLMCache"]
BUILTINS = [(name, doc) for name, doc in EXAMPLE_DOCS if doc["kind"] != "LLMCache"]
#: Workloads that ask for a sidecar.
APPS = [(name, doc) for name, doc in BUILTINS if doc["kind"] == "Deployment" and requested_cache(doc["spec"]["template"])]


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the API server would silently prune (a typo in an example would go unnoticed)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(item, schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += unknown_fields(item, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return found


def test_the_examples_cover_managed_external_and_an_app() -> None:
    names = {doc["metadata"]["name"]: doc for _, doc in LLMCACHES}
    assert len(APPS) >= 2  # the production-shaped app and the quick start's
    managed = names["chat"]["spec"]
    assert managed["redis"]["mode"] == "managed" and managed["milvus"]["mode"] == "managed"
    assert managed["vllm"]["gpus"] == 1 and managed["vllm"]["enablePrefixCaching"] is True
    external = names["chat-external"]["spec"]
    assert external["vllm"]["external"]["url"] and external["redis"]["mode"] == "external" and external["milvus"]["mode"] == "external"
    assert any(doc["kind"] == "Deployment" for _, doc in BUILTINS)


@pytest.mark.parametrize("name,doc", LLMCACHES, ids=[name for name, _ in LLMCACHES])
def test_llmcache_example_passes_the_crd_schema(name: str, doc: dict[str, Any]) -> None:
    schema = crd_schema()
    body = {key: value for key, value in doc.items() if key not in ("apiVersion", "kind", "metadata")}
    jsonschema.Draft4Validator(schema).validate(body)
    assert unknown_fields(body, schema) == []
    assert doc["apiVersion"] == "llmcache.dev/v1alpha1"


@pytest.mark.parametrize("name,doc", LLMCACHES, ids=[name for name, _ in LLMCACHES])
def test_llmcache_example_is_accepted_by_the_operator(name: str, doc: dict[str, Any]) -> None:
    spec = parse_spec(doc["spec"])
    assert spec.model.revision == doc["spec"]["model"]["revision"]
    cache_context(doc["metadata"]["name"], "llm", doc["spec"], OperatorConfig())


@pytest.mark.parametrize("name,doc", BUILTINS, ids=[name for name, _ in BUILTINS])
def test_builtin_example_passes_kubernetes_validate(name: str, doc: dict[str, Any]) -> None:
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("native", [True, False], ids=["native-sidecar", "classic-sidecar"])
@pytest.mark.parametrize("name,app", APPS, ids=[name for name, _ in APPS])
def test_the_example_app_stays_valid_once_injected(name: str, app: dict[str, Any], native: bool) -> None:
    template = app["spec"]["template"]
    cache = requested_cache(template)
    (cache_doc,) = [doc for _, doc in LLMCACHES if doc["metadata"]["name"] == cache]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "chat-frontend-x", **template["metadata"]}, "spec": template["spec"]}
    ctx = cache_context(cache, "llm", cache_doc["spec"], OperatorConfig())
    injected = injected_pod(pod, ctx, InjectionOptions(native_sidecar=native))
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(injected, version, strict=True)
    assert injected["metadata"]["annotations"][INJECTED_ANNOTATION] == "true"
    app_container = injected["spec"]["containers"][0]
    assert {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:8080/v1"} in app_container["env"]
