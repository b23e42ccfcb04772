"""Managed Milvus standalone (the semantic tier): embedded etcd, local storage, one pod.

No external etcd, object store or message queue: embedded etcd, ``COMMON_STORAGETYPE=local`` and
the Woodpecker WAL on the local file system keep everything under ``/var/lib/milvus`` on one
PersistentVolumeClaim (an emptyDir without persistence).

Milvus 3.x images run as their own ``milvus`` user (uid/gid 999), so the pod runs as that uid with
a read-only root filesystem.  Milvus only reads ``/milvus/configs`` (the settings come from the
environment); besides the data volume it writes ``/tmp``: its runtime dir falls back from
``/run/milvus`` to ``/tmp/milvus`` (pid file, server-id file).  Logs go to stdout.
docs/security.md lists the sources.
"""

from __future__ import annotations

from typing import Any

from . import names
from .context import CacheContext, locked_down_container, single_pod_statefulset

COMPONENT = "milvus"
GRPC_PORT = 19530
HEALTH_PORT = 9091
#: uid/gid of the ``milvus`` user the Milvus 3.x images create and run as.
MILVUS_UID = 999
DATA_VOLUME = "data"
DATA_PATH = "/var/lib/milvus"
SCRATCH_VOLUME = "tmp"
SCRATCH_PATH = "/tmp"


def milvus_env() -> list[dict[str, str]]:
    """One-pod standalone settings (environment overrides ``milvus.yaml``: ``MQ_TYPE`` is ``mq.type``)."""
    settings = {
        # Without it Milvus refuses embedded etcd ("can not be used under distributed mode").
        "DEPLOY_MODE": "STANDALONE",
        "ETCD_USE_EMBED": "true",
        "ETCD_DATA_DIR": f"{DATA_PATH}/etcd",
        "COMMON_STORAGETYPE": "local",
        "LOCALSTORAGE_PATH": f"{DATA_PATH}/data",
        # Named, not left to "default": a WAL cannot be switched later without Milvus' migration.
        "MQ_TYPE": "woodpecker",
        "WOODPECKER_STORAGE_TYPE": "local",
        "WOODPECKER_STORAGE_ROOTPATH": f"{DATA_PATH}/woodpecker",
    }
    return [{"name": name, "value": value} for name, value in settings.items()]


def milvus_statefulset(ctx: CacheContext) -> dict[str, Any]:
    spec = ctx.spec.milvus
    name = names.milvus_name(ctx.name)
    health = {"httpGet": {"path": "/healthz", "port": "health"}}
    container: dict[str, Any] = {
        "name": "milvus",
        "image": ctx.milvus_image,
        "command": ["milvus", "run", "standalone"],
        "env": milvus_env(),
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        # Milvus needs a minute or two on first start (etcd, segments): the startup probe waits,
        # the liveness probe only takes over once it is up.
        "startupProbe": {**health, "periodSeconds": 10, "failureThreshold": 30},
        "readinessProbe": {**health, "periodSeconds": 10, "timeoutSeconds": 5},
        "livenessProbe": {**health, "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 3},
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": DATA_PATH},
            {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH},
        ],
        "securityContext": locked_down_container(run_as_non_root=True),
    }
    if ctx.milvus_resources:
        container["resources"] = ctx.milvus_resources
    pod_spec: dict[str, Any] = {
        "containers": [container],
        # fsGroup: a data claim written by an earlier root-run Milvus becomes writable for uid 999
        # (relabelled once, not at every start).
        "securityContext": {"runAsUser": MILVUS_UID, "runAsGroup": MILVUS_UID, "fsGroup": MILVUS_UID,
                            "fsGroupChangePolicy": "OnRootMismatch"},
        "volumes": [{"name": SCRATCH_VOLUME, "emptyDir": {}}],
        "automountServiceAccountToken": False,
    }
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
