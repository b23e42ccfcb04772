"""NetworkPolicies of the managed tiers: only this cache's sidecars and the operator may connect.

One policy per managed backend (``<cache>-redis``, ``<cache>-milvus``), selecting its pod and
admitting, on its ports only: pods labelled ``llmcache.dev/client: <cache>`` in the cache's
namespace (the injector labels every pod it gives a sidecar) and the operator's pods (labelled
by the chart, in whatever namespace it runs).  Kubelet probes are not subject to the policies.
The Redis password remains the guard; the policies keep every other pod from even connecting.
"""

from __future__ import annotations

from typing import Any

from . import names
from .context import CacheContext
from .milvus import GRPC_PORT, HEALTH_PORT
from .redis import PORT as REDIS_PORT

#: Labels the chart puts on the operator's pods (``llmcache.operatorLabels``; not renamable).
OPERATOR_POD_LABELS = {"app.kubernetes.io/part-of": "llmcache", "app.kubernetes.io/component": "operator"}

#: The ports of each backend its clients may reach.
BACKEND_PORTS: dict[str, tuple[int, ...]] = {"redis": (REDIS_PORT,), "milvus": (GRPC_PORT, HEALTH_PORT)}


def backend_network_policy(ctx: CacheContext, component: str) -> dict[str, Any]:
    """The policy of ``component`` (``redis`` or ``milvus``) of the cache ``ctx``."""
    sidecars = {"podSelector": {"matchLabels": {names.CLIENT_LABEL: ctx.name}}}
    operator = {"namespaceSelector": {}, "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": ctx.metadata(f"{ctx.name}-{component}", component),
        "spec": {
            "podSelector": {"matchLabels": names.selector(ctx.name, component)},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [sidecars, operator],
                "ports": [{"protocol": "TCP", "port": port} for port in BACKEND_PORTS[component]],
            }],
        },
    }
