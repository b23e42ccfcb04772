"""Operator-wide settings read from the environment (a cluster admin sets them once, in the chart).

Every LLMCache may override the images and resources in its own spec; these are the defaults
when it does not.  Resources are JSON ResourceRequirements (``{"requests": {...}, "limits": {...}}``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from .spec import Resources

DEFAULT_SIDECAR_IMAGE = "ghcr.io/llmcache/llmcache-sidecar:0.1.0"
#: The sidecar image's ``gpu`` target (onnxruntime-gpu), for caches with ``embedding.device: cuda``.
DEFAULT_SIDECAR_GPU_IMAGE = "ghcr.io/llmcache/llmcache-sidecar:0.1.0-gpu"
DEFAULT_REDIS_IMAGE = "redis:7.2.5-alpine"
#: Milvus 3.x: the first line whose image runs as a non-root user (uid 999); see docs/security.md.
DEFAULT_MILVUS_IMAGE = "milvusdb/milvus:v3.0.1"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.6.3"
DEFAULT_STATS_INTERVAL_SECONDS = 60.0
#: A new model revision not Ready by then fails its rollout (the old one keeps serving).
DEFAULT_ROLLOUT_DEADLINE_SECONDS = 2700.0
DEFAULT_ROLLOUT_CHECK_SECONDS = 10.0
#: Time kube-proxy gets to apply a Service switch before the sidecars switch (see docs/rollout.md).
DEFAULT_ROLLOUT_PROPAGATION_SECONDS = 3.0
#: The injected sidecar's resources when neither the LLMCache nor the admin sets any.
DEFAULT_SIDECAR_RESOURCES = Resources(requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "1Gi"})


class SettingsError(ValueError):
    """An operator setting from the environment is invalid; the message names it."""


@dataclass(frozen=True)
class OperatorConfig:
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    #: The sidecar image for caches with ``embedding.device: cuda`` (``LLMCACHE_SIDECAR_GPU_IMAGE``).
    sidecar_gpu_image: str = DEFAULT_SIDECAR_GPU_IMAGE
    redis_image: str = DEFAULT_REDIS_IMAGE
    milvus_image: str = DEFAULT_MILVUS_IMAGE
    vllm_image: str = DEFAULT_VLLM_IMAGE
    #: How often ``status.stats`` is refreshed from the shared Redis counters.
    stats_interval_seconds: float = DEFAULT_STATS_INTERVAL_SECONDS
    #: How long a new model revision may take to become Ready (``LLMCACHE_ROLLOUT_DEADLINE_SECONDS``).
    rollout_deadline_seconds: float = DEFAULT_ROLLOUT_DEADLINE_SECONDS
    #: How often a running rollout is checked (deadline, retries of an unreachable Redis/Milvus).
    rollout_check_seconds: float = DEFAULT_ROLLOUT_CHECK_SECONDS
    #: Between the Service switch and the sidecars' switch (``LLMCACHE_ROLLOUT_PROPAGATION_SECONDS``).
    rollout_propagation_seconds: float = DEFAULT_ROLLOUT_PROPAGATION_SECONDS
    #: Resources of each component when the LLMCache's own ``resources`` is empty
    #: (``LLMCACHE_<COMPONENT>_RESOURCES``); managed Redis, Milvus and vLLM have none by default.
    sidecar_resources: Resources = DEFAULT_SIDECAR_RESOURCES
    redis_resources: Resources = field(default_factory=Resources)
    milvus_resources: Resources = field(default_factory=Resources)
    vllm_resources: Resources = field(default_factory=Resources)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        return cls(
            sidecar_image=env.get("LLMCACHE_SIDECAR_IMAGE") or DEFAULT_SIDECAR_IMAGE,
            sidecar_gpu_image=env.get("LLMCACHE_SIDECAR_GPU_IMAGE") or DEFAULT_SIDECAR_GPU_IMAGE,
            redis_image=env.get("LLMCACHE_REDIS_IMAGE") or DEFAULT_REDIS_IMAGE,
            milvus_image=env.get("LLMCACHE_MILVUS_IMAGE") or DEFAULT_MILVUS_IMAGE,
            vllm_image=env.get("LLMCACHE_VLLM_IMAGE") or DEFAULT_VLLM_IMAGE,
            stats_interval_seconds=_positive(env, "LLMCACHE_STATS_INTERVAL_SECONDS", DEFAULT_STATS_INTERVAL_SECONDS),
            rollout_deadline_seconds=_positive(env, "LLMCACHE_ROLLOUT_DEADLINE_SECONDS",
                                               DEFAULT_ROLLOUT_DEADLINE_SECONDS),
            rollout_check_seconds=_positive(env, "LLMCACHE_ROLLOUT_CHECK_SECONDS", DEFAULT_ROLLOUT_CHECK_SECONDS),
            rollout_propagation_seconds=_positive(env, "LLMCACHE_ROLLOUT_PROPAGATION_SECONDS",
                                                  DEFAULT_ROLLOUT_PROPAGATION_SECONDS),
            sidecar_resources=_resources(env, "LLMCACHE_SIDECAR_RESOURCES", DEFAULT_SIDECAR_RESOURCES),
            redis_resources=_resources(env, "LLMCACHE_REDIS_RESOURCES", Resources()),
            milvus_resources=_resources(env, "LLMCACHE_MILVUS_RESOURCES", Resources()),
            vllm_resources=_resources(env, "LLMCACHE_VLLM_RESOURCES", Resources()),
        )


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be > 0")
    return value


def _resources(env: Mapping[str, str], name: str, default: Resources) -> Resources:
    """JSON ResourceRequirements; unset or empty means ``default``, ``{}`` means none."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        return Resources.model_validate_json(raw)
    except ValidationError as exc:
        problems = [
            ": ".join(filter(None, [".".join(map(str, error["loc"])), error["msg"].removeprefix("Value error, ")]))
            for error in exc.errors()
        ]
        raise SettingsError(
            f"{name}={raw!r} is not a ResourceRequirements in JSON ({'; '.join(problems)}); "
            'expected e.g. {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}'
        ) from None
