"""Run the sidecar's two listeners in the current event loop (used by the CLI and the tests)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from llmcache_sidecar.admin import make_metrics_app
from llmcache_sidecar.app import make_api_app
from llmcache_sidecar.config import Settings, parse_host_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SidecarHandle:
    #: e.g. "http://127.0.0.1:8080" (the real port when the setting asked for port 0)
    api_url: str
    metrics_url: str
    app: web.Application
    metrics_app: web.Application


def _url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def _site(app: web.Application, listen: str, *, access_log: bool, reuse_port: bool) -> AsyncIterator[web.AppRunner]:
    host, port = parse_host_port(listen)
    runner = web.AppRunner(app, access_log=log if access_log else None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port).start()
        yield runner
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve(settings: Settings, *, reuse_port: bool = False) -> AsyncIterator[SidecarHandle]:
    """Start the API on ``settings.listen`` and metrics/admin on ``settings.metrics_listen``
    (``reuse_port``: beside other workers bound to the same ports, see :mod:`.workers`)."""
    api = make_api_app(settings)
    metrics = make_metrics_app(api)
    access_log = settings.log_level == "debug"
    async with _site(api, settings.listen, access_log=access_log, reuse_port=reuse_port) as api_runner, \
            _site(metrics, settings.metrics_listen, access_log=access_log, reuse_port=reuse_port) as metrics_runner:
        handle = SidecarHandle(api_url=_url(api_runner), metrics_url=_url(metrics_runner), app=api,
                               metrics_app=metrics)
        log.info("llmcache sidecar: API on %s, metrics on %s, upstream %s, exact tier %s",
                 handle.api_url, handle.metrics_url, settings.upstream_url,
                 "redis" if settings.redis_url else "in-process")
        yield handle
