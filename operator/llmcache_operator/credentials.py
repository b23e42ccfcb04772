"""The generated Secrets: the managed Redis password and the sidecars' admin token.

Builders take the secret value as an argument (they stay pure); the value is generated once,
when the Secret does not exist yet, and never rotated by a reconcile.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any

from . import names
from .context import CacheContext


@dataclass(frozen=True)
class GeneratedSecret:
    name: str
    key: str
    component: str


def generated_secrets(ctx: CacheContext) -> list[GeneratedSecret]:
    """The Secrets this cache needs: an admin token always, a password for a managed Redis."""
    wanted = [GeneratedSecret(names.admin_secret_name(ctx.name), "token", "admin")]
    if ctx.spec.redis.mode == "managed":
        wanted.append(GeneratedSecret(names.redis_secret_name(ctx.name), "password", "redis"))
    return wanted


def new_secret_value() -> str:
    return secrets.token_urlsafe(32)


def secret_manifest(ctx: CacheContext, wanted: GeneratedSecret, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": ctx.metadata(wanted.name, wanted.component),
        "data": {wanted.key: base64.b64encode(value.encode()).decode()},
    }
