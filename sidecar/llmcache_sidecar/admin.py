"""The metrics listener: ``/metrics``, ``/healthz``, ``/readyz``, and the admin endpoints.

Admin access: with ``admin_token`` set, ``Authorization: Bearer <token>`` is required; without
one, only loopback clients are answered (an in-cluster sidecar always has a token).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from llmcache_sidecar import state
from llmcache_sidecar.errors import error_response
from llmcache_sidecar.keys import TENANT_PATTERN

log = logging.getLogger(__name__)


def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def admin_refusal(request: web.Request) -> web.Response | None:
    """None if the caller may use the admin endpoints, else the 401/403 to answer."""
    token = request.app[state.API_APP][state.SETTINGS].admin_token
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        return error_response(401, "admin endpoints need Authorization: Bearer <LLMCACHE_ADMIN_TOKEN>",
                              "authentication_error", code="invalid_admin_token",
                              headers={"WWW-Authenticate": "Bearer"})
    if _is_loopback(request.remote):
        return None
    return error_response(403, "without LLMCACHE_ADMIN_TOKEN the admin endpoints answer loopback clients only",
                          "permission_error", code="admin_loopback_only")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _invalidation_target(body: Any) -> dict[str, str | None]:
    """``{"revision": r}`` / ``{"tenant": t}`` / ``{"all": true}`` -> invalidate() arguments."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    chosen = [name for name in ("revision", "tenant", "all") if name in body]
    if len(chosen) != 1 or set(body) - {"revision", "tenant", "all"}:
        raise ValueError('give exactly one of {"revision": ...}, {"tenant": ...}, {"all": true}')
    name = chosen[0]
    value = body[name]
    if name == "all":
        if value is not True:
            raise ValueError('"all" must be true')
        return {"revision": None, "tenant": None}
    if name == "revision":
        if (not isinstance(value, str) or not value or len(value) > 128 or ":" in value
                or any(c.isspace() for c in value)):
            raise ValueError('"revision" must be a non-empty string without ":" or whitespace')
        return {"revision": value, "tenant": None}
    if not isinstance(value, str) or (value and not TENANT_PATTERN.match(value)):
        raise ValueError('"tenant" must be a tenant id (A-Z a-z 0-9 . _ @ -, at most 128) or ""')
    return {"revision": None, "tenant": value}


async def invalidate(request: web.Request) -> web.Response:
    refusal = admin_refusal(request)
    if refusal is not None:
        return refusal
    try:
        target = _invalidation_target(orjson.loads(await request.read()))
    except (orjson.JSONDecodeError, ValueError) as exc:
        return error_response(400, str(exc), "invalid_request_error", code="invalid_invalidation")
    api = request.app[state.API_APP]
    metrics = api[state.METRICS]
    settings = api[state.SETTINGS]
    report: dict[str, Any] = {**{k: v for k, v in target.items() if v is not None}, "exactEntries": 0,
                              "semanticEntries": 0}
    errors = []
    try:
        report["exactEntries"] = await api[state.EXACT_TIER].invalidate(settings.cache_name, **target)
        metrics.invalidated_total.labels(tier="exact").inc(report["exactEntries"])
    except Exception as exc:  # noqa: BLE001 - reported to the caller
        api[state.EXACT_HEALTH].failed(exc)
        errors.append(f"exact tier: {exc}")
    semantic = api[state.SEMANTIC_TIER]
    if semantic is not None:
        try:
            report["semanticEntries"] = await semantic.invalidate(**target)
            metrics.invalidated_total.labels(tier="semantic").inc(report["semanticEntries"])
        except Exception as exc:  # noqa: BLE001
            api[state.SEMANTIC_HEALTH].failed(exc)
            errors.append(f"semantic tier: {exc}")
    if errors:
        report["errors"] = errors
    log.info("invalidated %s", report)
    return _json(report, 503 if errors else 200)


async def refresh_entries(api: web.Application) -> dict[str, int | None]:
    """Count the entries of each tier now (None for a tier that could not be counted)."""
    metrics = api[state.METRICS]
    counts: dict[str, int | None] = {"exact": None}
    health = api[state.EXACT_HEALTH]
    if health.available():
        try:
            counts["exact"] = await api[state.EXACT_TIER].count(api[state.SETTINGS].cache_name)
            health.succeeded()
        except Exception as exc:  # noqa: BLE001
            health.failed(exc)
    semantic = api[state.SEMANTIC_TIER]
    if semantic is not None:
        counts["semantic"] = None
        try:
            counts["semantic"] = await semantic.count()
        except Exception as exc:  # noqa: BLE001
            api[state.SEMANTIC_HEALTH].failed(exc)
    for tier, count in counts.items():
        if count is not None:
            metrics.entries.labels(tier=tier).set(count)
    return counts


async def stats(request: web.Request) -> web.Response:
    refusal = admin_refusal(request)
    if refusal is not None:
        return refusal
    api = request.app[state.API_APP]
    settings = api[state.SETTINGS]
    exact = api[state.EXACT_TIER]
    backends = {exact.backend: api[state.EXACT_HEALTH].report()}
    if api[state.SEMANTIC_TIER] is not None:
        backends["semantic"] = api[state.SEMANTIC_HEALTH].report()
    entries = await refresh_entries(api)
    local = api[state.STATS]
    fleet = None
    if api[state.EXACT_HEALTH].available():
        try:
            fleet = await exact.read_stats(local.key)
        except Exception as exc:  # noqa: BLE001
            api[state.EXACT_HEALTH].failed(exc)
    return _json({
        "cache": settings.cache_name,
        "revision": api[state.REVISION].active,
        "exactTier": exact.backend,
        "semanticTier": api[state.SEMANTIC_TIER] is not None,
        "degraded": sorted(name for name, report in backends.items() if not report["healthy"]),
        "backends": backends,
        "entries": entries,
        "requests": with_hit_ratio(local.totals),
        #: every sidecar's counts added up (from the shared Redis hash; None without Redis)
        "fleet": None if fleet is None else with_hit_ratio(fleet),
    })


def with_hit_ratio(counts: dict[str, int]) -> dict[str, float | int]:
    requests = counts.get("requests", 0)
    hits = counts.get("hitsExact", 0) + counts.get("hitsSemantic", 0)
    return {"requests": requests, "hitsExact": counts.get("hitsExact", 0),
            "hitsSemantic": counts.get("hitsSemantic", 0), "tokensSaved": counts.get("tokensSaved", 0),
            "hitRatio": hits / requests if requests else 0.0}


async def metrics(request: web.Request) -> web.Response:
    api = request.app[state.API_APP]
    await refresh_entries(api)
    return web.Response(body=api[state.METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready as soon as the API serves: cache trouble only means pass-through, never unready."""
    if state.UPSTREAM not in request.app[state.API_APP]:
        return web.Response(status=503, text="starting\n")
    return web.Response(text="ok\n")


def make_metrics_app(api: web.Application) -> web.Application:
    app = web.Application()
    app[state.API_APP] = api
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/admin/invalidate", invalidate)
    app.router.add_get("/admin/stats", stats)
    return app
