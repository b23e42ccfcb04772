"""Names and labels shared with the webhook, the chart and the rollout (notes/K8S_NAMES.md)."""

from __future__ import annotations

import hashlib
import re

GROUP = "llmcache.dev"
VERSION = "v1alpha1"
PLURAL = "llmcaches"
KIND = "LLMCache"
API_VERSION = f"{GROUP}/{VERSION}"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "llmcache-operator"
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
CACHE_LABEL = "llmcache.dev/cache"
REVISION_LABEL = "llmcache.dev/revision"
#: On every pod the injector gives a sidecar: ``<cache>``; the managed backends' NetworkPolicies admit it.
CLIENT_LABEL = "llmcache.dev/client"
#: The unslugged ``spec.model.revision`` a vLLM Deployment serves (label values are too narrow).
MODEL_REVISION_ANNOTATION = "llmcache.dev/model-revision"

#: The longest LLMCache name whose children all fit Kubernetes' name limits: a StatefulSet's
#: pods carry ``controller-revision-hash: <statefulset>-<10 chars>`` (a 63-char label value),
#: and ``<cache>-milvus`` is the longest StatefulSet name.
MAX_CACHE_NAME_LENGTH = 45

_REVSLUG_MAX = 40


def labels(cache: str, component: str) -> dict[str, str]:
    """The labels every child of ``cache`` carries."""
    return {
        NAME_LABEL: "llmcache",
        MANAGED_BY_LABEL: MANAGED_BY,
        CACHE_LABEL: cache,
        COMPONENT_LABEL: component,
    }


def selector(cache: str, component: str) -> dict[str, str]:
    """The pod selector of one component (stable: selectors of workloads are immutable)."""
    return {CACHE_LABEL: cache, COMPONENT_LABEL: component}


def revslug(revision: str) -> str:
    """A DNS-label-safe slug of a model revision; a short hash keeps lossy slugs distinct."""
    slug = re.sub(r"[^a-z0-9-]+", "-", revision.lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-")
    if slug == revision and len(slug) <= _REVSLUG_MAX:
        return slug
    digest = hashlib.sha256(revision.encode()).hexdigest()[:8]
    return f"{slug[:_REVSLUG_MAX].rstrip('-')}-{digest}".lstrip("-")


def redis_name(cache: str) -> str:
    return f"{cache}-redis"


def milvus_name(cache: str) -> str:
    return f"{cache}-milvus"


def vllm_service_name(cache: str) -> str:
    return f"{cache}-vllm"


def vllm_deployment_name(cache: str, revision: str) -> str:
    return f"{cache}-vllm-{revslug(revision)}"


def sidecar_configmap_name(cache: str) -> str:
    return f"{cache}-sidecar"


def admin_secret_name(cache: str) -> str:
    return f"{cache}-admin"


def redis_secret_name(cache: str) -> str:
    return f"{cache}-redis"


def redis_url(cache: str, namespace: str) -> str:
    return f"redis://{redis_name(cache)}.{namespace}.svc:6379/0"


def milvus_uri(cache: str, namespace: str) -> str:
    return f"http://{milvus_name(cache)}.{namespace}.svc:19530"


def vllm_url(cache: str, namespace: str) -> str:
    return f"http://{vllm_service_name(cache)}.{namespace}.svc:8000"


def stats_key(cache: str) -> str:
    """The Redis hash every sidecar adds its counters to (DESIGN.md, "Shared counters")."""
    return f"llmcache:{cache}:stats"
