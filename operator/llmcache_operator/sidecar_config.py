"""The sidecar's ConfigMap, rendered by the sidecar's own config model so the two never disagree."""

from __future__ import annotations

from typing import Any

from llmcache_sidecar.config import ConfigError, render_yaml
from pydantic import ValidationError

from . import names
from .context import CacheContext
from .spec import DEFAULT_EMBEDDING_MODEL, SpecError, describe_errors

COMPONENT = "sidecar-config"
CONFIG_KEY = "config.yaml"


def sidecar_settings(ctx: CacheContext, revision: str) -> dict[str, Any]:
    """The sidecar settings (field names of ``llmcache_sidecar.config.Settings``) for ``revision``."""
    spec = ctx.spec
    semantic = spec.cache.semantic
    settings: dict[str, Any] = {
        "upstream_url": ctx.vllm_url,
        "redis_url": ctx.redis_url,
        "milvus_uri": ctx.milvus_uri,
        "cache_name": ctx.name,
        "model_revision": revision,
        "listen": f"127.0.0.1:{spec.sidecar.port}",
        "metrics_listen": f"0.0.0.0:{spec.sidecar.metrics_port}",
        "embedding_device": spec.embedding.device,
        "exact_enabled": spec.cache.exact.enabled,
        "semantic_enabled": semantic.enabled,
        "ttl_seconds": spec.cache.exact.ttl_seconds,
        "semantic_ttl_seconds": semantic.ttl_seconds,
        "speculative_upstream": semantic.speculative_upstream,
        "max_temperature": spec.cache.max_temperature,
    }
    if spec.embedding.model != DEFAULT_EMBEDDING_MODEL:
        settings["embedding_model"] = spec.embedding.model
    if semantic.threshold is not None:
        settings["similarity_threshold"] = semantic.threshold
    if semantic.target_precision is not None:
        settings["target_precision"] = semantic.target_precision
    if spec.cache.tenant_header:
        settings["tenant_header"] = spec.cache.tenant_header
    return settings


def render_sidecar_config(ctx: CacheContext, revision: str) -> str:
    """``config.yaml``; a setting the sidecar refuses becomes a :class:`SpecError`."""
    try:
        return render_yaml(sidecar_settings(ctx, revision))
    except ValidationError as exc:
        raise SpecError(f"the sidecar refuses this configuration: {describe_errors(exc)}") from None
    except ConfigError as exc:
        raise SpecError(f"the sidecar refuses this configuration: {exc}") from None


def sidecar_configmap(ctx: CacheContext, revision: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": ctx.metadata(names.sidecar_configmap_name(ctx.name), COMPONENT),
        "data": {CONFIG_KEY: render_sidecar_config(ctx, revision)},
    }
