"""What the end-to-end test puts into the cluster: the quick start's files (examples/kind/),
with the images under test, plus the test server's ConfigMap."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from e2e.cluster import REPO, split_image

EXAMPLES = REPO / "examples" / "kind"
UPSTREAM_SOURCE = REPO / "tests" / "upstream.py"
#: The sidecar image the quick start builds; the test replaces it with the image under test.
QUICKSTART_IMAGE = "llmcache-sidecar:dev"

#: Runs in the app container (the sidecar image: it has Python): one chat completion through
#: $OPENAI_BASE_URL, printing the X-LLMCache header and the answer. Retries while the sidecar starts.
_CALL_TEMPLATE = """
import json, os, time, urllib.error, urllib.request
body = json.dumps({"model": "%(model)s", "temperature": 0,
                   "messages": [{"role": "user", "content": "What is a cache?"}]}).encode()
request = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", body,
                                 {"Content-Type": "application/json"})
for attempt in range(60):
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
            print(json.dumps({"x_llmcache": response.headers.get("X-LLMCache"),
                              "content": answer["choices"][0]["message"]["content"]}))
            break
    except (urllib.error.URLError, ConnectionError):
        time.sleep(1)
else:
    raise SystemExit("the sidecar never answered")
"""


def release_values(operator_image: str, sidecar_image: str, install_crd: bool) -> dict[str, Any]:
    """The chart values of the e2e release: the images under test, the CRD unless already owned."""
    return {
        "crds": {"install": install_crd},
        "operator": {"image": {**split_image(operator_image), "pullPolicy": "IfNotPresent"}, "logLevel": "verbose"},
        "defaults": {"sidecar": {"image": sidecar_image}},
    }


def example(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]


def _with_image(objects: list[dict[str, Any]], image: str) -> list[dict[str, Any]]:
    result = copy.deepcopy(objects)
    for obj in result:
        for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if container["image"] == QUICKSTART_IMAGE:
                container["image"] = image
    return result


def _in(namespace: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    return objects


def upstream_objects(namespace: str, image: str) -> list[dict[str, Any]]:
    """The OpenAI-compatible test server: its ConfigMap (tests/upstream.py), Deployment, Service."""
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo-upstream"},
                 "data": {"upstream.py": UPSTREAM_SOURCE.read_text()}}
    return _in(namespace, [configmap, *_with_image(example("demo-upstream.yaml"), image)])


def llmcache(namespace: str, revision: str, managed_milvus: bool, milvus_storage: str | None = None) -> dict[str, Any]:
    """The quick start's LLMCache at ``revision``; with ``managed_milvus`` the operator runs Milvus,
    on a claim of ``milvus_storage`` if given (else an emptyDir)."""
    (cache,) = _in(namespace, example("llmcache-demo.yaml"))
    cache["spec"]["model"]["revision"] = revision
    if managed_milvus:
        persistence = {"persistence": True, "storage": milvus_storage} if milvus_storage else {"persistence": False}
        cache["spec"]["milvus"] = {"mode": "managed", **persistence}
    return cache


def app(namespace: str, image: str) -> dict[str, Any]:
    (deployment,) = _in(namespace, _with_image(example("demo-app.yaml"), image))
    return deployment


CACHE_NAME: str = example("llmcache-demo.yaml")[0]["metadata"]["name"]
MODEL: str = example("llmcache-demo.yaml")[0]["spec"]["model"]["name"]
APP_NAME: str = example("demo-app.yaml")[0]["metadata"]["name"]
UPSTREAM_NAME: str = example("demo-upstream.yaml")[0]["metadata"]["name"]
CALL_SCRIPT = _CALL_TEMPLATE % {"model": MODEL}
