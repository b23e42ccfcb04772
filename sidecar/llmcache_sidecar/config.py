"""The sidecar's configuration: one model, read from a YAML file, the environment and flags.

Precedence (last wins): built-in defaults < YAML file (``LLMCACHE_CONFIG``) < ``LLMCACHE_*``
environment variables < command-line flags.  The operator renders the YAML file from this same
model (:func:`render_yaml`), so the ConfigMap and the sidecar can never disagree on names.
Secrets (``redis_password``, ``admin_token``) are never rendered into the file: they come from
the environment, which the operator fills from Secrets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmcache_sidecar.redis_client import check_url

ENV_PREFIX = "LLMCACHE_"
CONFIG_FILE_ENV = "LLMCACHE_CONFIG"

#: Default semantic threshold (cosine similarity); calibrated by ``llmcache calibrate`` on
#: ``shared/data/qqp-pairs-dev.jsonl`` for precision >= 0.85 (see docs/benchmarks.md).
DEFAULT_SIMILARITY_THRESHOLD = 0.93

#: The precision the match verifier's cut is chosen for when no target is set (docs/semantic.md).
DEFAULT_TARGET_PRECISION = 0.85

#: Fields that hold secrets: read from the environment only, never written to a file.
SECRET_FIELDS = frozenset({"redis_password", "admin_token"})


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the setting and what to fix."""


class Settings(BaseModel):
    """Every setting of the sidecar.  Field ``foo_bar`` is env ``LLMCACHE_FOO_BAR``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upstream_url: str = Field(description="OpenAI-compatible upstream (vLLM), e.g. http://host:8000")
    listen: str = Field("127.0.0.1:8080", description="address:port of the API")
    metrics_listen: str = Field("0.0.0.0:9090", description="address:port of /metrics, /healthz, /readyz, /admin")
    redis_url: str | None = Field(None, description="exact tier: redis://, rediss://, unix:// or a Redis Cluster as "
                                     "redis+cluster://host:port[,host:port...] (docs/cluster.md); "
                                     "unset means an in-process LRU tier")
    redis_password: str | None = Field(None, description="Redis password (from a Secret)")
    milvus_uri: str = Field("./llmcache-milvus.db", description="semantic tier; a path means embedded Milvus Lite")
    embedding_model: str | None = Field(None, description="directory with model.onnx + tokenizer.json; unset means the packaged default")
    embedding_device: Literal["auto", "cuda", "cpu"] = Field("auto", description="where the embedder runs")
    similarity_threshold: float = Field(DEFAULT_SIMILARITY_THRESHOLD, gt=0.0, le=1.0, description="cosine similarity a semantic hit needs (verifier off, or entries stored without text)")
    target_precision: float | None = Field(None, ge=0.5, le=0.99, description="share of semantic hits that must be right; picks the verifier's cut (or the cosine threshold, verifier off) from the verifier file's held-out table")
    verifier: Literal["on", "off"] = Field("on", description="decide semantic hits with the match verifier (re-ranks the nearest candidates); off: the cosine threshold alone")
    verifier_path: str | None = Field(None, description="verifier file or directory (llmcache tune --out); unset means verifier.json in the embedding model directory, else the packaged one")
    ttl_seconds: int = Field(86400, gt=0, description="lifetime of exact entries")
    semantic_ttl_seconds: int | None = Field(None, gt=0, description="lifetime of semantic entries; unset means ttl_seconds")
    exact_enabled: bool = Field(True, description="look answers up by exact key (answers are stored either way)")
    semantic_enabled: bool = Field(True, description="run the semantic tier (embedder + Milvus)")
    speculative_upstream: bool = Field(False, description="after an exact miss, send the request upstream while the semantic tier looks, and abort it on a semantic hit: a miss no longer waits for the embedding, a semantic hit costs the upstream an aborted request (its prefill, or billed input tokens)")
    max_temperature: float = Field(0.8, ge=0.0, le=2.0, description="requests above it bypass the cache")
    model_revision: str = Field("default", min_length=1, max_length=128, description="revision the entries are written under")
    cache_name: str = Field("default", min_length=1, max_length=63, description="namespace of the keys and the collection")
    tenant_header: str | None = Field(None, description="header carrying the tenant id; unset means no tenants")
    admin_token: str | None = Field(None, description="bearer token for /admin (from a Secret)")
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="larger request bodies get 413")
    memory_max_entries: int = Field(10000, gt=0, description="size of the in-process exact tier")
    upstream_timeout_seconds: float = Field(600.0, gt=0, description="total time allowed for one upstream call")
    upstream_connect_timeout_seconds: float = Field(5.0, gt=0, description="time allowed to connect to the upstream")
    backend_timeout_seconds: float = Field(0.5, gt=0, description="time allowed for one cache backend call before bypass")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level (debug also logs every request)")

    @field_validator("upstream_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value:
            check_url(value)
        return value

    @field_validator("cache_name", "model_revision")
    @classmethod
    def _key_safe(cls, value: str) -> str:
        if ":" in value or any(ch.isspace() for ch in value):
            raise ValueError("must not contain ':' or whitespace (it is part of every cache key)")
        return value

    @property
    def effective_semantic_ttl(self) -> int:
        return self.semantic_ttl_seconds or self.ttl_seconds


def parse_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ``("127.0.0.1", 8080)``; ``"[::1]:80"`` works too; port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not address:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _from_env(environ: Mapping[str, str]) -> dict[str, str]:
    values = {}
    for field in Settings.model_fields:
        raw = environ.get(env_name(field))
        if raw is not None and raw != "":
            values[field] = raw
    return values


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{CONFIG_FILE_ENV}={path}: cannot read the file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{CONFIG_FILE_ENV}={path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{CONFIG_FILE_ENV}={path}: expected a mapping of settings, got {type(data).__name__}")
    secrets = SECRET_FIELDS & data.keys()
    if secrets:
        raise ConfigError(f"{CONFIG_FILE_ENV}={path}: {', '.join(sorted(secrets))} must come from the environment (a Secret), not the file")
    return data


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build :class:`Settings` from file < env < overrides (flags); raise :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    config_file = environ.get(CONFIG_FILE_ENV)
    if config_file:
        for key, value in _from_file(Path(config_file)).items():
            values[key] = value
            sources[key] = f"{key} in {config_file}"
    for key, value in _from_env(environ).items():
        values[key] = value
        sources[key] = env_name(key)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
            sources[key] = "--" + key.replace("_", "-")
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            where = sources.get(field, env_name(field))
            if error["type"] == "missing":
                problems.append(f"{env_name(field)} is required")
            elif error["type"] == "extra_forbidden":
                problems.append(f"unknown setting {where}")
            else:
                shown = "" if field in SECRET_FIELDS else f"={values.get(field)!r}"
                problems.append(f"{where}{shown}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def render_yaml(settings: Mapping[str, Any]) -> str:
    """The YAML file the operator mounts: validated, secrets refused, defaults left out."""
    secrets = SECRET_FIELDS & settings.keys()
    if secrets:
        raise ConfigError(f"{', '.join(sorted(secrets))} must not be rendered into a ConfigMap")
    validated = Settings(**settings)
    data = validated.model_dump(exclude_defaults=True, exclude=set(SECRET_FIELDS))
    data["upstream_url"] = validated.upstream_url
    return yaml.safe_dump(data, sort_keys=True)
