"""The API app factory: routes, shared state, and the lifetimes of its clients.

Lifetimes are ``cleanup_ctx`` entries, listed in :func:`api_contexts`, opened in order on start
and closed in reverse on stop.  The semantic tier adds its own context there.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from llmcache_sidecar import state
from llmcache_sidecar.config import Settings
from llmcache_sidecar.errors import error_response
from llmcache_sidecar.events import events_context
from llmcache_sidecar.health import BackendHealth
from llmcache_sidecar.keys import KeyBuilder
from llmcache_sidecar.metrics import Metrics
from llmcache_sidecar.proxy import handler
from llmcache_sidecar.revision import RevisionState
from llmcache_sidecar.stats import Stats
from llmcache_sidecar.tiers.exact import make_exact_tier
from llmcache_sidecar.tiers.semantic import open_semantic_tier
from llmcache_sidecar.upstream import make_session, pass_through
from llmcache_sidecar.upstream_pool import UpstreamPool

log = logging.getLogger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def upstream_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[state.SETTINGS]
    pool = UpstreamPool(lambda: make_session(settings), retire_after_seconds=settings.upstream_timeout_seconds + 5)
    app[state.UPSTREAM] = pool
    yield
    await pool.close()


async def exact_tier_context(app: web.Application) -> AsyncIterator[None]:
    tier = make_exact_tier(app[state.SETTINGS])
    app[state.EXACT_TIER] = tier
    async with app[state.STATS].flushing(tier, app[state.EXACT_HEALTH]):
        yield
    await tier.close()


async def semantic_tier_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[state.SETTINGS]
    if not settings.semantic_enabled:
        yield
        return
    async with open_semantic_tier(settings, observe_embedding=app[state.METRICS].embedding_seconds.observe) as tier:
        app[state.SEMANTIC_TIER] = tier
        yield


def api_contexts() -> list[CleanupContext]:
    """What the API app opens, in order (each closes in reverse order)."""
    return [upstream_context, exact_tier_context, semantic_tier_context, events_context]


@web.middleware
async def unexpected_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A bug must still give the client an OpenAI-style answer, never a bare traceback page."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal error in the llmcache sidecar", "server_error", code="sidecar_error")


async def _pass_through(request: web.Request) -> web.StreamResponse:
    return await pass_through(request, request.app[state.UPSTREAM].session, request.app[state.SETTINGS].upstream_url)


def make_api_app(settings: Settings) -> web.Application:
    # client_max_size is the limit of request.read(); the cacheable handlers answer 413 above it
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[unexpected_errors])
    metrics = Metrics()
    app[state.SETTINGS] = settings
    app[state.KEYS] = KeyBuilder(settings)
    app[state.METRICS] = metrics
    app[state.REVISION] = RevisionState(settings.model_revision)
    app[state.STATS] = Stats(settings.cache_name)
    exact_backend = "redis" if settings.redis_url else "memory"
    app[state.EXACT_HEALTH] = BackendHealth(exact_backend, metrics.backend_errors_total.labels(backend=exact_backend))
    app[state.SEMANTIC_HEALTH] = BackendHealth("semantic")
    app[state.SEMANTIC_TIER] = None
    app.cleanup_ctx.extend(api_contexts())
    app.router.add_post("/v1/chat/completions", handler("chat"))
    app.router.add_post("/v1/completions", handler("completions"))
    app.router.add_post("/v1/embeddings", handler("embeddings"))
    app.router.add_route("*", "/v1/{tail:.*}", _pass_through)
    return app
