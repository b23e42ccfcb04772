"""A handler module with only the operator's login and logout: the webhook tests run without reconciling."""

from __future__ import annotations

import kopf
from llmcache_operator import handlers
from llmcache_operator.runtime import Runtime


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    kopf.on.login(registry=registry)(handlers.login)
    kopf.on.cleanup(registry=registry)(handlers.close_api)
