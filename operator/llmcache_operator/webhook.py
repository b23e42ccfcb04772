"""What the injection webhook does to a pod: pure functions, pod + LLMCache spec in, pod out.

A pod opts in with the annotation ``llmcache.dev/inject: <cache>`` (the contract) or the label
of the same name (which is what the webhook's ``objectSelector`` can see: selectors match labels
only).  The annotation wins when both are set.  See docs/injection.md.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import names
from .context import CacheContext, locked_down_container
from .settings import OperatorConfig
from .spec import SpecError, parse_spec

INJECT_KEY = "llmcache.dev/inject"
INJECTED_ANNOTATION = "llmcache.dev/injected"

CONTAINER_NAME = "llmcache-sidecar"
CONFIG_VOLUME = "llmcache-config"
TMP_VOLUME = "llmcache-tmp"
CONFIG_DIR = "/etc/llmcache"
BASE_URL_ENV = "OPENAI_BASE_URL"

GPU_RESOURCE = "nvidia.com/gpu"
#: The sidecar image's user (``USER 65532:65532``), set so ``runAsNonRoot`` holds for any image.
SIDECAR_UID = 65532


@dataclass(frozen=True)
class InjectionOptions:
    """Operator-wide choice: the sidecar form the cluster supports (native from Kubernetes 1.29)."""

    native_sidecar: bool


def requested_cache(pod: Mapping[str, Any]) -> str | None:
    """The LLMCache the pod asks for: the annotation, else the label; ``None`` if it asks for none."""
    metadata = pod.get("metadata") or {}
    for source in (metadata.get("annotations") or {}, metadata.get("labels") or {}):
        value = str(source.get(INJECT_KEY) or "").strip()
        if value:
            return value
    return None


def is_injected(pod: Mapping[str, Any]) -> bool:
    """True when the pod already carries the sidecar (either form) or the injected mark."""
    metadata = pod.get("metadata") or {}
    if (metadata.get("annotations") or {}).get(INJECTED_ANNOTATION) == "true":
        return True
    spec = pod.get("spec") or {}
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    return any(container.get("name") == CONTAINER_NAME for container in containers)


def sidecar_resources(cache: CacheContext) -> dict[str, Any]:
    """``spec.sidecar.resources`` (else the operator's default); one GPU when the embedding device is ``cuda``, none for ``cpu``."""
    resources = cache.sidecar_resources
    if cache.spec.embedding.device == "cuda":
        resources.setdefault("limits", {}).setdefault(GPU_RESOURCE, 1)
    elif cache.spec.embedding.device == "cpu":
        for part in list(resources):
            resources[part].pop(GPU_RESOURCE, None)
            if not resources[part]:
                del resources[part]
    return resources


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    # optional: a pod must never be stuck because the operator has not written a Secret yet.
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}


def _http_probe(path: str, port: int, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, **timing}


def sidecar_container(cache: CacheContext, options: InjectionOptions) -> dict[str, Any]:
    """The ``llmcache-sidecar`` container for a pod using ``cache``.

    Probes use the metrics listener: ``/readyz`` stays ready while pass-through to the upstream
    works, so a cache backend outage never makes the app pod unready.  In native form a startup
    probe holds the app containers back until the sidecar listens.
    """
    port, metrics_port = cache.spec.sidecar.port, cache.spec.sidecar.metrics_port
    env = [
        {"name": "LLMCACHE_CONFIG", "value": f"{CONFIG_DIR}/config.yaml"},
        {"name": "LLMCACHE_LISTEN", "value": f"127.0.0.1:{port}"},
        {"name": "LLMCACHE_METRICS_LISTEN", "value": f"0.0.0.0:{metrics_port}"},
    ]
    if cache.redis_password_secret is not None:
        env.append(_secret_env("LLMCACHE_REDIS_PASSWORD", *cache.redis_password_secret))
    env.append(_secret_env("LLMCACHE_ADMIN_TOKEN", names.admin_secret_name(cache.name), "token"))
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": cache.sidecar_image,
        "ports": [
            {"name": "llmcache-api", "containerPort": port, "protocol": "TCP"},
            {"name": "llmcache-metric", "containerPort": metrics_port, "protocol": "TCP"},
        ],
        "env": env,
        "resources": sidecar_resources(cache),
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "securityContext": {**locked_down_container(run_as_non_root=True), "runAsUser": SIDECAR_UID, "runAsGroup": SIDECAR_UID},
        "livenessProbe": _http_probe("/healthz", metrics_port, periodSeconds=10, timeoutSeconds=2, failureThreshold=3),
        "readinessProbe": _http_probe("/readyz", metrics_port, periodSeconds=5, timeoutSeconds=2, failureThreshold=3),
    }
    if options.native_sidecar:
        container["restartPolicy"] = "Always"
        container["startupProbe"] = _http_probe("/healthz", metrics_port, periodSeconds=1, timeoutSeconds=2, failureThreshold=120)
    return container


def sidecar_volumes(cache: CacheContext) -> list[dict[str, Any]]:
    """The ConfigMap ``<cache>-sidecar`` (read-only config) and a scratch dir for the read-only root."""
    configmap = {"name": names.sidecar_configmap_name(cache.name), "items": [{"key": "config.yaml", "path": "config.yaml"}]}
    return [
        {"name": CONFIG_VOLUME, "configMap": configmap},
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}},
    ]


def port_conflicts(pod: Mapping[str, Any], cache: CacheContext) -> list[int]:
    """The sidecar's ports that a container of the pod declares already (they share one network)."""
    spec = pod.get("spec") or {}
    declared = {
        port.get("containerPort")
        for container in (spec.get("containers") or []) + (spec.get("initContainers") or [])
        for port in container.get("ports") or []
    }
    return sorted(declared & {cache.spec.sidecar.port, cache.spec.sidecar.metrics_port})


def _with_base_url(container: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    result = dict(container)
    env = list(container.get("env") or [])
    if not any(item.get("name") == BASE_URL_ENV for item in env):
        env.append({"name": BASE_URL_ENV, "value": base_url})
    result["env"] = env
    return result


def injected_pod(pod: Mapping[str, Any], cache: CacheContext, options: InjectionOptions) -> dict[str, Any]:
    """A copy of ``pod`` with the sidecar, its volumes, ``OPENAI_BASE_URL`` and the injected mark.

    An already injected pod comes back unchanged.
    """
    result = copy.deepcopy(dict(pod))
    if is_injected(pod):
        return result
    port = cache.spec.sidecar.port
    sidecar = sidecar_container(cache, options)
    spec = result.setdefault("spec", {})
    spec["containers"] = [_with_base_url(c, f"http://127.0.0.1:{port}/v1") for c in spec.get("containers") or []]
    if options.native_sidecar:
        spec["initContainers"] = [sidecar] + list(spec.get("initContainers") or [])
    else:
        spec["containers"].append(sidecar)
    spec["volumes"] = list(spec.get("volumes") or []) + sidecar_volumes(cache)
    metadata = result.setdefault("metadata", {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), INJECTED_ANNOTATION: "true"}
    # what the managed Redis and Milvus NetworkPolicies admit (networkpolicy.py)
    metadata["labels"] = {**(metadata.get("labels") or {}), names.CLIENT_LABEL: cache.name}
    return result



@dataclass(frozen=True)
class Review:
    """The webhook's answer for one pod: the pod to admit instead (``None``: unchanged) and a warning."""

    pod: dict[str, Any] | None = None
    warning: str | None = None
    reason: str | None = None


def review_pod(
    pod: Mapping[str, Any],
    namespace: str,
    find_spec: Callable[[str], Any],
    config: OperatorConfig,
    options: InjectionOptions,
) -> Review:
    """Decide what happens to a pod being created in ``namespace``.

    ``find_spec(name)`` gives the spec of the LLMCache ``name`` in that namespace (any JSON value:
    it is validated here), or ``None`` when there is no such LLMCache.
    A missing or invalid LLMCache admits the pod unchanged, with a warning that says why.
    """
    cache = requested_cache(pod)
    if cache is None or is_injected(pod):
        return Review()
    spec = find_spec(cache)
    if spec is None:
        return Review(
            warning=f"llmcache: LLMCache {namespace}/{cache} does not exist; the pod runs without the cache sidecar",
            reason="LLMCacheNotFound",
        )
    try:
        context = CacheContext(cache, namespace, parse_spec(spec), config)
    except SpecError as exc:
        return Review(
            warning=f"llmcache: LLMCache {namespace}/{cache} is invalid ({exc}); the pod runs without the cache sidecar",
            reason="LLMCacheInvalid",
        )
    clashes = port_conflicts(pod, context)
    if clashes:
        return Review(
            warning=(
                f"llmcache: the pod already uses port(s) {', '.join(map(str, clashes))}, which LLMCache {namespace}/{cache} "
                "gives the sidecar (spec.sidecar.port, metricsPort); the pod runs without the cache sidecar"
            ),
            reason="LLMCachePortConflict",
        )
    return Review(pod=injected_pod(pod, context, options))


def warning_event(pod: Mapping[str, Any], namespace: str, review: Review, name: str, now: datetime.datetime) -> dict[str, Any]:
    """A ``Warning`` Event about a pod being created (it has no uid yet, maybe no name)."""
    metadata = pod.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": metadata.get("name") or metadata.get("generateName") or ""},
        "type": "Warning",
        "reason": review.reason or "LLMCacheInjection",
        "message": review.warning or "",
        "source": {"component": names.MANAGED_BY},
        "reportingComponent": names.MANAGED_BY,
        "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": 1,
    }
