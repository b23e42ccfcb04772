"""The LLMCache spec as a typed model: defaults, and the checks a CRD schema cannot express.

The CRD (``crds/llmcache.dev_llmcaches.yaml``) applies the same defaults on a real API server; a
test keeps the two in step.  :func:`parse_spec` turns every problem into one :class:`SpecError`
whose message says what to fix, so the operator can report it before creating anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

QUANTITY_PATTERN = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|Ki|Mi|Gi|Ti|Pi|Ei)?$"
#: ``maxmemory`` as redis.conf spells it: bytes, or a number with k/kb/m/mb/g/gb.
REDIS_MEMORY_PATTERN = r"^\d+([kKmMgG][bB]?)?$"
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"

#: vLLM flags the operator sets itself: an ``extraArgs`` entry repeating one is a conflict.
MANAGED_VLLM_FLAGS = frozenset({
    "--model", "--served-model-name", "--max-model-len", "--port", "--host",
    "--enable-prefix-caching", "--no-enable-prefix-caching", "--tensor-parallel-size",
})

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"

Quantity = str | int | float


class SpecError(ValueError):
    """The spec cannot be provisioned; the message says what to fix."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Resources(_Model):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _quantities(self) -> Resources:
        for section, values in (("requests", self.requests), ("limits", self.limits)):
            for name, value in values.items():
                if isinstance(value, str) and not re.match(QUANTITY_PATTERN, value):
                    raise ValueError(f"{section}.{name}={value!r} is not a Kubernetes quantity")
        return self

    def as_dict(self) -> dict[str, dict[str, Quantity]]:
        return {key: dict(value) for key, value in (("requests", self.requests), ("limits", self.limits)) if value}


class ModelSpec(_Model):
    name: str = Field(min_length=1)
    #: Part of every cache key: no ':' and no whitespace (as the sidecar requires).
    revision: str = Field(min_length=1, max_length=128, pattern=r"^[^:\s]+$")
    served_model_name: str | None = None

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.name


class External(_Model):
    url: str = ""


class SecretKeyRef(_Model):
    name: str = Field(min_length=1)
    key: str = "token"


class VLLMSpec(_Model):
    external: External = Field(default_factory=External)
    image: str = ""
    replicas: int = Field(1, ge=1)
    gpus: int = Field(1, ge=0)
    enable_prefix_caching: bool = True
    max_model_len: int = Field(8192, ge=1)
    extra_args: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    #: A PersistentVolumeClaim to keep downloaded weights across restarts; unset → an emptyDir.
    model_cache_claim: str = ""
    #: A Secret holding a Hugging Face token, for gated models.
    hf_token_secret: SecretKeyRef | None = None

    @property
    def is_external(self) -> bool:
        return bool(self.external.url)

    @model_validator(mode="after")
    def _args(self) -> VLLMSpec:
        for arg in self.extra_args:
            flag = arg.split("=", 1)[0]
            if flag in MANAGED_VLLM_FLAGS:
                raise ValueError(f"extraArgs must not set {flag}: the operator sets it from the spec")
        if self.external.url and not self.external.url.startswith(("http://", "https://")):
            raise ValueError(f"external.url={self.external.url!r} must start with http:// or https://")
        return self


class RedisSpec(_Model):
    mode: Literal["managed", "external"] = "managed"
    url: str = ""
    image: str = ""
    persistence: bool = True
    storage: str = Field("1Gi", pattern=QUANTITY_PATTERN)
    maxmemory: str = Field("512mb", pattern=REDIS_MEMORY_PATTERN)
    maxmemory_policy: Literal[
        "noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random",
        "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl",
    ] = "allkeys-lru"
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _external(self) -> RedisSpec:
        if self.mode == "external":
            if not self.url:
                raise ValueError("mode external needs url (redis://host:port/db)")
            if not self.url.startswith(("redis://", "rediss://", "redis+cluster://", "rediss+cluster://", "unix://")):
                raise ValueError(f"url={self.url!r} must start with redis://, rediss://, redis+cluster://, rediss+cluster:// or unix://")
        return self


class MilvusSpec(_Model):
    mode: Literal["managed", "external"] = "managed"
    uri: str = ""
    image: str = ""
    persistence: bool = True
    storage: str = Field("10Gi", pattern=QUANTITY_PATTERN)
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _external(self) -> MilvusSpec:
        if self.mode == "external" and not self.uri:
            raise ValueError("mode external needs uri (http://host:19530)")
        return self


class EmbeddingSpec(_Model):
    model: str = DEFAULT_EMBEDDING_MODEL
    device: Literal["auto", "cuda", "cpu"] = "auto"


class ExactSpec(_Model):
    enabled: bool = True
    ttl_seconds: int = Field(86400, ge=1)


class SemanticSpec(_Model):
    enabled: bool = True
    threshold: float | None = Field(None, gt=0.0, le=1.0)
    target_precision: float | None = Field(None, gt=0.0, le=1.0)
    ttl_seconds: int = Field(86400, ge=1)

    @model_validator(mode="after")
    def _one_goal(self) -> SemanticSpec:
        if self.threshold is not None and self.target_precision is not None:
            raise ValueError("set threshold or targetPrecision, not both")
        return self


class CacheSettingsSpec(_Model):
    exact: ExactSpec = Field(default_factory=ExactSpec)
    semantic: SemanticSpec = Field(default_factory=SemanticSpec)
    max_temperature: float = Field(0.8, ge=0.0, le=2.0)
    tenant_header: str | None = Field(None, pattern=HEADER_NAME_PATTERN)


class SidecarSpec(_Model):
    image: str = ""
    port: int = Field(8080, ge=1, le=65535)
    metrics_port: int = Field(9090, ge=1, le=65535)
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _ports(self) -> SidecarSpec:
        if self.port == self.metrics_port:
            raise ValueError("port and metricsPort must differ")
        return self


class LLMCacheSpec(_Model):
    model: ModelSpec
    vllm: VLLMSpec = Field(default_factory=VLLMSpec)
    redis: RedisSpec = Field(default_factory=RedisSpec)
    milvus: MilvusSpec = Field(default_factory=MilvusSpec)
    embedding: EmbeddingSpec = Field(default_factory=EmbeddingSpec)
    cache: CacheSettingsSpec = Field(default_factory=CacheSettingsSpec)
    sidecar: SidecarSpec = Field(default_factory=SidecarSpec)


def parse_spec(spec: Mapping[str, Any]) -> LLMCacheSpec:
    """Validate ``spec`` and fill in the defaults; raise :class:`SpecError` naming every problem."""
    try:
        return LLMCacheSpec.model_validate(dict(spec))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = "spec." + ".".join(str(part) for part in error["loc"]) if error["loc"] else "spec"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise SpecError("; ".join(problems)) from None
