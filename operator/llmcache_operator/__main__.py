"""``llmcache-operator``: run the kopf operator in-cluster or against any kubeconfig.

Handlers come from :data:`HANDLER_MODULES`: each module exposes
``register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None``.  A fresh registry per
run keeps tests (and other modules' handlers) from leaking into each other.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import kopf

from .runtime import Runtime
from .settings import OperatorConfig, SettingsError

#: Modules whose ``register(registry, runtime)`` adds handlers; add yours to this tuple.
HANDLER_MODULES: tuple[str, ...] = ("llmcache_operator.handlers", "llmcache_operator.admission")

ANNOTATION_PREFIX = "llmcache.dev"


@dataclass(frozen=True)
class Options:
    namespaces: tuple[str, ...] = ()
    liveness: str | None = None
    verbose: bool = False
    debug: bool = False

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="llmcache-operator",
        description="Run the LLMCache operator. Credentials: the pod's service account in-cluster, "
                    "else KUBECONFIG or ~/.kube/config. Image defaults: LLMCACHE_*_IMAGE.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="serve LLMCaches in this namespace only (repeatable; globs like 'team-*' work)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="serve every namespace (the default when no --namespace is given)")
    parser.add_argument("--liveness", metavar="URL",
                        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("-v", "--verbose", action="store_true", help="log handler activity in detail")
    parser.add_argument("--debug", action="store_true", help="log everything, API calls included")
    args = parser.parse_args(argv)
    return Options(namespaces=tuple(args.namespace), liveness=args.liveness, verbose=args.verbose, debug=args.debug)


def operator_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration",
    )
    # Events for what users must act on (warnings, errors, kopf.warn/event calls), not for
    # every successful handler run.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "llmcache-operator"
    # Server-side watch timeouts, so a silently dropped connection is noticed and re-opened.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # One replica (the chart uses the Recreate strategy): no peering objects needed.
    settings.peering.standalone = True
    return settings


def build_registry(runtime: Runtime, modules: Sequence[str] = HANDLER_MODULES) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    for module in modules:
        importlib.import_module(module).register(registry, runtime)
    return registry


async def run_operator(
    options: Options,
    *,
    config: OperatorConfig | None = None,
    modules: Sequence[str] = HANDLER_MODULES,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """The operator until ``stop_flag`` is set (or a signal arrives)."""
    runtime = Runtime(config=config or OperatorConfig.from_env())
    await kopf.operator(
        registry=build_registry(runtime, modules),
        settings=operator_settings(),
        memo=runtime,
        standalone=True,
        clusterwide=options.clusterwide,
        namespaces=options.namespaces,
        liveness_endpoint=options.liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    kopf.configure(verbose=options.verbose, debug=options.debug)
    try:
        config = OperatorConfig.from_env()
        # Handler modules read their own settings when they register (the webhook's
        # LLMCACHE_WEBHOOK_*), which run_operator does first, before kopf starts anything.
        asyncio.run(run_operator(options, config=config))
    except SettingsError as exc:
        print(f"llmcache-operator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
