"""The objects the end-to-end test puts into the cluster, as plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e.cluster import REPO

UPSTREAM_SOURCE = REPO / "tests" / "upstream.py"
UPSTREAM_NAME = "e2e-upstream"
UPSTREAM_PORT = 8000
APP_NAME = "e2e-app"
CACHE_NAME = "e2e"
MODEL = "test-model"

#: Runs in the app container (the sidecar image: it has Python): one chat completion through
#: $OPENAI_BASE_URL, printing the X-LLMCache header and the answer. Retries while the sidecar starts.
CALL_SCRIPT = """
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
""" % {"model": MODEL}

_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
_POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}


def upstream_objects(namespace: str, image: str) -> list[dict[str, Any]]:
    """The OpenAI-compatible test server (tests/upstream.py from a ConfigMap) and its Service."""
    labels = {"app.kubernetes.io/name": UPSTREAM_NAME}
    return [
        {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": UPSTREAM_NAME, "namespace": namespace},
            "data": {"upstream.py": Path(UPSTREAM_SOURCE).read_text()},
        },
        {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": UPSTREAM_NAME, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": _POD_SECURITY,
                        "containers": [{
                            "name": "upstream",
                            "image": image,
                            "command": ["python", "/opt/upstream/upstream.py", "--host", "0.0.0.0", "--port", str(UPSTREAM_PORT)],
                            "ports": [{"name": "http", "containerPort": UPSTREAM_PORT}],
                            "readinessProbe": {"httpGet": {"path": "/v1/models", "port": "http"}, "periodSeconds": 2},
                            "volumeMounts": [{"name": "source", "mountPath": "/opt/upstream", "readOnly": True}],
                            "securityContext": _RESTRICTED,
                        }],
                        "volumes": [{"name": "source", "configMap": {"name": UPSTREAM_NAME}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": UPSTREAM_NAME, "namespace": namespace},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": UPSTREAM_PORT, "targetPort": "http"}]},
        },
    ]


def llmcache(namespace: str, revision: str, managed_milvus: bool) -> dict[str, Any]:
    """An LLMCache in front of the test server: managed Redis, Milvus managed or Lite in the sidecar."""
    milvus = {"mode": "managed", "persistence": False} if managed_milvus else {"mode": "external", "uri": "/tmp/llmcache-milvus.db"}
    return {
        "apiVersion": "llmcache.dev/v1alpha1", "kind": "LLMCache",
        "metadata": {"name": CACHE_NAME, "namespace": namespace},
        "spec": {
            "model": {"name": MODEL, "revision": revision},
            "vllm": {"external": {"url": f"http://{UPSTREAM_NAME}.{namespace}.svc:{UPSTREAM_PORT}"}},
            "redis": {"mode": "managed", "persistence": False},
            "milvus": milvus,
            "embedding": {"device": "cpu"},
        },
    }


def app(namespace: str, image: str) -> dict[str, Any]:
    """An app that asks for the sidecar (label and annotation) and idles; the test execs into it."""
    labels = {"app.kubernetes.io/name": APP_NAME}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": APP_NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": {**labels, "llmcache.dev/inject": CACHE_NAME},
                    "annotations": {"llmcache.dev/inject": CACHE_NAME},
                },
                "spec": {
                    "securityContext": _POD_SECURITY,
                    "containers": [{
                        "name": "app",
                        "image": image,
                        "command": ["python", "-c", "import time; time.sleep(10**9)"],
                        "securityContext": _RESTRICTED,
                    }],
                },
            },
        },
    }
