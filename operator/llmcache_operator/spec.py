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
#: Names of Secrets and PersistentVolumeClaims (DNS subdomains): a pod naming an invalid one is
#: refused by the API server, which would block an injected app pod or a vLLM Deployment.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
#: A password inside a Redis URL (``scheme://user:password@`` or ``?password=``): searched (not
#: anchored at the end), as the CRD's CEL rules ``matches()`` do.
URL_USERINFO_PASSWORD = r"^[^:/?#]+://[^/?#@]*:[^/?#@]*@"
URL_QUERY_PASSWORD = r"[?&]password="
#: Deployment replicas are an int32.
MAX_REPLICAS = 2**31 - 1
#: Cut-offs that keep a status message readable (and within what a status or an Event can hold).
MAX_SHOWN_CHARS = 80
MAX_PROBLEMS = 10

#: vLLM flags the operator sets itself: an ``extraArgs`` entry repeating one is a conflict.
MANAGED_VLLM_FLAGS = frozenset({
    "--model", "--served-model-name", "--max-model-len", "--port", "--host",
    "--enable-prefix-caching", "--no-enable-prefix-caching", "--tensor-parallel-size",
})

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"

Quantity = str | int | float


class SpecError(ValueError):
    """The spec cannot be provisioned; the message says what to fix."""


def shown(value: Any) -> str:
    """``repr(value)``, cut to a length a status message can quote."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 1] + "…"


def _shown_part(part: str) -> str:
    """A field name as it is, unless too long or unprintable (a user's key can be anything)."""
    return part if len(part) <= MAX_SHOWN_CHARS and part.isprintable() else shown(part)


def describe_errors(exc: ValidationError, root: str = "") -> str:
    """One line naming each problem of ``exc`` (``where: what``), the first :data:`MAX_PROBLEMS` of them."""
    problems = []
    errors = exc.errors()
    for error in errors[:MAX_PROBLEMS]:
        parts = [root] if root else []
        parts += [_shown_part(str(part)) for part in error["loc"]]
        where = ".".join(parts) or "spec"
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_PROBLEMS} more problems")
    return "; ".join(problems)


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
                    raise ValueError(f"{section}.{shown(name)}={shown(value)} is not a Kubernetes quantity")
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
    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN)
    key: str = Field("token", max_length=253, pattern=SECRET_KEY_PATTERN)


class PasswordSecretRef(SecretKeyRef):
    key: str = Field("password", max_length=253, pattern=SECRET_KEY_PATTERN)


class VLLMSpec(_Model):
    external: External = Field(default_factory=External)
    image: str = ""
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    gpus: int = Field(1, ge=0)
    enable_prefix_caching: bool = True
    max_model_len: int = Field(8192, ge=1)
    extra_args: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    #: A PersistentVolumeClaim to keep downloaded weights across restarts; unset → an emptyDir.
    model_cache_claim: str = Field("", max_length=253, pattern=f"^$|{OBJECT_NAME_PATTERN}")
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
            raise ValueError(f"external.url={shown(self.external.url)} must start with http:// or https://")
        return self


class RedisSpec(_Model):
    mode: Literal["managed", "external"] = "managed"
    url: str = Field("", max_length=4096)
    image: str = ""
    persistence: bool = True
    storage: str = Field("1Gi", pattern=QUANTITY_PATTERN)
    maxmemory: str = Field("512mb", pattern=REDIS_MEMORY_PATTERN)
    maxmemory_policy: Literal[
        "noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random",
        "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl",
    ] = "allkeys-lru"
    resources: Resources = Field(default_factory=Resources)
    #: The password of an external Redis (``LLMCACHE_REDIS_PASSWORD`` of the sidecars).
    password_secret: PasswordSecretRef | None = None

    @model_validator(mode="after")
    def _external(self) -> RedisSpec:
        if self.mode == "external":
            if not self.url:
                raise ValueError("mode external needs url (redis://host:port/db)")
            if not self.url.startswith(("redis://", "rediss://", "redis+cluster://", "rediss+cluster://", "unix://")):
                raise ValueError(f"url={shown(self.url)} must start with redis://, rediss://, redis+cluster://, rediss+cluster:// or unix://")
        elif self.password_secret is not None:
            raise ValueError("passwordSecret is for mode external; managed Redis uses its generated Secret")
        if re.search(URL_USERINFO_PASSWORD, self.url) or re.search(URL_QUERY_PASSWORD, self.url):
            raise ValueError(
                "url must not contain a password (anyone who can read the LLMCache or the sidecar ConfigMap "
                "would see it): put it in a Secret, name it in redis.passwordSecret {name, key}, and remove it "
                "from the url"
            )
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
    speculative_upstream: bool = False

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


def parse_spec(spec: Any) -> LLMCacheSpec:
    """Validate ``spec`` (any JSON value) and fill in the defaults; raise :class:`SpecError`
    naming every problem (the first :data:`MAX_PROBLEMS`)."""
    if not isinstance(spec, Mapping):
        raise SpecError(f"spec: must be an object (with at least model.name and model.revision), not {_json_type(spec)}")
    try:
        return LLMCacheSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise SpecError(describe_errors(exc, root="spec")) from None



def _json_type(value: Any) -> str:
    kinds = ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), (list, "an array"))
    return next((name for kind, name in kinds if isinstance(value, kind)), "null" if value is None else type(value).__name__)
