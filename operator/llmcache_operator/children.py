"""Everything one LLMCache should own, built (and so validated) before anything is written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import names
from .context import CacheContext
from .credentials import GeneratedSecret, generated_secrets
from .milvus import milvus_service, milvus_statefulset
from .networkpolicy import backend_network_policy
from .redis import redis_service, redis_statefulset
from .settings import OperatorConfig
from .sidecar_config import sidecar_configmap
from .spec import SpecError, parse_spec
from .vllm import vllm_deployment, vllm_service


@dataclass(frozen=True)
class DesiredState:
    """The children of one LLMCache: manifests to apply, and Secrets to generate if missing."""

    manifests: list[dict[str, Any]]
    secrets: list[GeneratedSecret]
    #: Revisions that keep a vLLM Deployment (anything else of this cache gets pruned).
    serving_revisions: frozenset[str]


def cache_context(name: str, namespace: str, spec: Mapping[str, Any], config: OperatorConfig) -> CacheContext:
    """Validate the LLMCache's identity and spec; raise :class:`SpecError` with what to fix."""
    if len(name) > names.MAX_CACHE_NAME_LENGTH:
        raise SpecError(
            f"metadata.name: {name!r} is {len(name)} characters; at most {names.MAX_CACHE_NAME_LENGTH} fit "
            "the names of its children (recreate it with a shorter name)"
        )
    return CacheContext(name=name, namespace=namespace, spec=parse_spec(spec), config=config)


def desired_state(ctx: CacheContext, active_revision: str, serving_revisions: frozenset[str]) -> DesiredState:
    """The children for ``ctx``: ``active_revision`` gets the traffic, each serving one a Deployment.

    Without a rollout in progress both are ``spec.model.revision``.  Raises :class:`SpecError`
    when a part cannot be built (e.g. the sidecar refuses the configuration).
    """
    manifests: list[dict[str, Any]] = [sidecar_configmap(ctx, active_revision)]
    if ctx.spec.redis.mode == "managed":
        manifests += [redis_statefulset(ctx), redis_service(ctx), backend_network_policy(ctx, "redis")]
    if ctx.spec.milvus.mode == "managed":
        manifests += [milvus_statefulset(ctx), milvus_service(ctx), backend_network_policy(ctx, "milvus")]
    if not ctx.spec.vllm.is_external:
        manifests += [vllm_deployment(ctx, revision) for revision in sorted(serving_revisions)]
        manifests.append(vllm_service(ctx, active_revision))
    serving = frozenset() if ctx.spec.vllm.is_external else serving_revisions
    return DesiredState(manifests=manifests, secrets=generated_secrets(ctx), serving_revisions=serving)
