"""Managed Milvus standalone (the semantic tier): embedded etcd, local storage, one pod.

No external etcd or object store: ``ETCD_USE_EMBED`` and ``COMMON_STORAGETYPE=local`` keep
everything under ``/var/lib/milvus`` on one PersistentVolumeClaim.  The image runs as root, so
the pod only drops privileges it does not need (capabilities, escalation).
"""

from __future__ import annotations

from typing import Any

from . import names
from .context import CacheContext, locked_down_container, single_pod_statefulset

COMPONENT = "milvus"
GRPC_PORT = 19530
HEALTH_PORT = 9091
DATA_VOLUME = "data"
DATA_PATH = "/var/lib/milvus"


def milvus_statefulset(ctx: CacheContext) -> dict[str, Any]:
    spec = ctx.spec.milvus
    name = names.milvus_name(ctx.name)
    health = {"httpGet": {"path": "/healthz", "port": "health"}}
    container: dict[str, Any] = {
        "name": "milvus",
        "image": ctx.milvus_image,
        "command": ["milvus", "run", "standalone"],
        "env": [
            {"name": "ETCD_USE_EMBED", "value": "true"},
            {"name": "ETCD_DATA_DIR", "value": f"{DATA_PATH}/etcd"},
            {"name": "COMMON_STORAGETYPE", "value": "local"},
            {"name": "LOCALSTORAGE_PATH", "value": f"{DATA_PATH}/data"},
        ],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        # Milvus needs a minute or two on first start (etcd, segments): the startup probe waits,
        # the liveness probe only takes over once it is up.
        "startupProbe": {**health, "periodSeconds": 10, "failureThreshold": 30},
        "readinessProbe": {**health, "periodSeconds": 10, "timeoutSeconds": 5},
        "livenessProbe": {**health, "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 3},
        "volumeMounts": [{"name": DATA_VOLUME, "mountPath": DATA_PATH}],
        "securityContext": locked_down_container(run_as_non_root=False),
    }
    if ctx.milvus_resources:
        container["resources"] = ctx.milvus_resources
    pod_spec: dict[str, Any] = {"containers": [container], "automountServiceAccountToken": False}
    storage = spec.storage if spec.persistence else None
    return single_pod_statefulset(ctx, name, COMPONENT, pod_spec, DATA_VOLUME, storage)


def milvus_service(ctx: CacheContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(names.milvus_name(ctx.name), COMPONENT),
        "spec": {
            "selector": names.selector(ctx.name, COMPONENT),
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "health", "port": HEALTH_PORT, "targetPort": "health", "protocol": "TCP"},
            ],
        },
    }
