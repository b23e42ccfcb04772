"""Pods and LLMCache specs the webhook tests feed in."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
from llmcache_operator.context import CacheContext
from llmcache_operator.settings import OperatorConfig
from llmcache_operator.spec import parse_spec

#: Native sidecars exist from 1.29 on; the classic form must pass the same schema.
K8S_VERSION = "1.29"
CACHE_SPEC: dict[str, Any] = {
    "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "revision": "r1"},
    "embedding": {"device": "cpu"},
    "sidecar": {"port": 8081, "metricsPort": 9091},
}


def cache_context(spec: dict[str, Any] | None = None, name: str = "demo") -> CacheContext:
    """An LLMCache ``name`` in ``team-a`` as the webhook sees it (validated spec, default images)."""
    return CacheContext(name, "team-a", parse_spec(CACHE_SPEC if spec is None else spec), OperatorConfig())


def app_pod(*, annotation: str | None = "demo", label: str | None = None, base_url: str | None = None) -> dict[str, Any]:
    """A Deployment-made pod (generateName, no name) with an app and an existing init container."""
    env = [{"name": "MODEL", "value": "llama"}]
    if base_url is not None:
        env.append({"name": "OPENAI_BASE_URL", "value": base_url})
    metadata: dict[str, Any] = {"generateName": "app-7d9f-", "namespace": "team-a", "labels": {"app": "chat"}}
    if annotation is not None:
        metadata["annotations"] = {"llmcache.dev/inject": annotation}
    if label is not None:
        metadata["labels"]["llmcache.dev/inject"] = label
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "initContainers": [{"name": "migrate", "image": "busybox:1.36", "command": ["true"]}],
            "containers": [
                {"name": "app", "image": "ghcr.io/example/chat:1", "env": env, "ports": [{"name": "http", "containerPort": 8000}]},
                {"name": "worker", "image": "ghcr.io/example/worker:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }


def validate_pod(pod: dict[str, Any]) -> None:
    """Schema-validate a pod as the API server would receive it (a generated name filled in)."""
    pod = copy.deepcopy(pod)
    pod["metadata"].setdefault("name", pod["metadata"].get("generateName", "pod-") + "x1")
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
