"""Managed Redis (the exact tier and the shared counters): a one-pod StatefulSet and its Service."""

from __future__ import annotations

from typing import Any

from . import names
from .context import CacheContext, locked_down_container, single_pod_statefulset

COMPONENT = "redis"
PORT = 6379
#: uid/gid of the ``redis`` user in the official images (alpine and debian alike).
REDIS_UID = 999
DATA_VOLUME = "data"


def redis_args(ctx: CacheContext) -> list[str]:
    spec = ctx.spec.redis
    return [
        "--port", str(PORT),
        "--dir", "/data",
        "--requirepass", "$(REDIS_PASSWORD)",
        "--maxmemory", spec.maxmemory,
        "--maxmemory-policy", spec.maxmemory_policy,
        "--appendonly", "yes" if spec.persistence else "no",
        "--save", "",
    ]


def redis_statefulset(ctx: CacheContext) -> dict[str, Any]:
    spec = ctx.spec.redis
    name = names.redis_name(ctx.name)
    password = {"secretKeyRef": {"name": names.redis_secret_name(ctx.name), "key": "password"}}
    ping = ["sh", "-c", '[ "$(redis-cli -p 6379 ping)" = "PONG" ]']
    container: dict[str, Any] = {
        "name": "redis",
        "image": ctx.redis_image,
        "command": ["redis-server"],
        "args": redis_args(ctx),
        "env": [
            {"name": "REDIS_PASSWORD", "valueFrom": password},
            {"name": "REDISCLI_AUTH", "valueFrom": password},
        ],
        "ports": [{"name": "redis", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"exec": {"command": ping}, "periodSeconds": 5, "timeoutSeconds": 3},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "initialDelaySeconds": 10, "periodSeconds": 10},
        "volumeMounts": [{"name": DATA_VOLUME, "mountPath": "/data"}],
        "securityContext": locked_down_container(run_as_non_root=True),
    }
    if ctx.redis_resources:
        container["resources"] = ctx.redis_resources
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {"runAsUser": REDIS_UID, "runAsGroup": REDIS_UID, "fsGroup": REDIS_UID},
        "automountServiceAccountToken": False,
    }
    storage = spec.storage if spec.persistence else None
    return single_pod_statefulset(ctx, name, COMPONENT, pod_spec, DATA_VOLUME, storage)


def redis_service(ctx: CacheContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(names.redis_name(ctx.name), COMPONENT),
        "spec": {
            "selector": names.selector(ctx.name, COMPONENT),
            "ports": [{"name": "redis", "port": PORT, "targetPort": "redis", "protocol": "TCP"}],
        },
    }
