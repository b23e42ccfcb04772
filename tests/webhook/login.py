"""A handler module with only the operator's login: the webhook tests run without reconciling."""

from __future__ import annotations

import kopf
from llmcache_operator import handlers
from llmcache_operator.runtime import Runtime


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    kopf.on.login(registry=registry)(handlers.login)
