"""``llmcache-sidecar``: the command line.  One flag per setting (``--upstream-url`` for
``upstream_url``), generated from the Settings model; flags override env and file.  Secrets
have no flag (a flag shows in ``ps``): they come from the environment only."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args, get_origin

from llmcache_sidecar.config import CONFIG_FILE_ENV, SECRET_FIELDS, ConfigError, Settings, env_name, load_settings
from llmcache_sidecar.server import serve
from llmcache_sidecar.workers import WORKERS_ENV, check_workers, run_workers

PROG = "llmcache-sidecar"


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="OpenAI-compatible caching proxy (exact + semantic tiers) in front of an LLM server.",
        epilog=f"Every setting can also come from the environment ({env_name('upstream_url')}, ...) or a YAML "
               f"file named by {CONFIG_FILE_ENV} (--config); flags win over both.")
    parser.add_argument("--config", metavar="FILE", help=f"YAML settings file (default: ${CONFIG_FILE_ENV})")
    parser.add_argument("--workers", metavar="N", type=int, default=None,
                        help=f"processes serving the same ports (SO_REUSEPORT), to use N cores; more than one "
                             f"needs a Redis exact tier [env {WORKERS_ENV}, default 1]")
    for name, field in Settings.model_fields.items():
        if name in SECRET_FIELDS:
            continue
        help_text = f"{field.description or name.replace('_', ' ')} [env {env_name(name)}]"
        if field.annotation is bool:
            parser.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        elif get_origin(field.annotation) is Literal:
            parser.add_argument(flag(name), dest=name, choices=get_args(field.annotation), default=None,
                                help=help_text)
        else:
            parser.add_argument(flag(name), dest=name, metavar="VALUE", default=None, help=help_text)
    return parser


def workers_from_args(args: argparse.Namespace, environ: dict[str, str]) -> int:
    if args.workers is not None:
        return int(args.workers)
    raw = environ.get(WORKERS_ENV) or "1"
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{WORKERS_ENV}={raw!r}: not a whole number") from None


def settings_from_args(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    overrides: dict[str, Any] = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    if args.config:
        environ = {**environ, CONFIG_FILE_ENV: args.config}
    return load_settings(environ=environ, overrides=overrides)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (a cheaper hit path: see docs/benchmarks.md), else
    None (asyncio's default loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def run(settings: Settings, *, reuse_port: bool = False) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with serve(settings, reuse_port=reuse_port):
        # everything made at start-up lives as long as the process: out of the collector's way, so
        # a full collection (150 ms over the start-up heap under load) never stalls a request
        gc.collect()
        gc.freeze()
        await stop.wait()


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    environ = dict(os.environ) if environ is None else environ
    try:
        settings = settings_from_args(args, environ)
        workers = workers_from_args(args, environ)
        check_workers(settings, workers)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if workers > 1:
        return run_workers(settings, workers, functools.partial(run, reuse_port=True), loop_factory())
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(run(settings))
    except OSError as exc:  # e.g. the port is taken
        print(f"{PROG}: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
