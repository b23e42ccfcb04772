"""The keys under which the apps keep their shared state (``web.AppKey``: typed, no globals)."""

from __future__ import annotations

from aiohttp import web

from llmcache_sidecar.config import Settings
from llmcache_sidecar.health import BackendHealth
from llmcache_sidecar.keys import KeyBuilder
from llmcache_sidecar.metrics import Metrics
from llmcache_sidecar.revision import RevisionState
from llmcache_sidecar.stats import Stats
from llmcache_sidecar.tiers.base import SemanticTier
from llmcache_sidecar.tiers.exact import ExactTier
from llmcache_sidecar.upstream_pool import UpstreamPool

# API app
SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("keys", KeyBuilder)
METRICS = web.AppKey("metrics", Metrics)
REVISION = web.AppKey("revision", RevisionState)
STATS = web.AppKey("stats", Stats)
#: the pooled session to the upstream (``.session``; recycled at a revision switch)
UPSTREAM = web.AppKey("upstream", UpstreamPool)
EXACT_TIER = web.AppKey("exact_tier", ExactTier)
#: health of the exact tier's backend (never fails for the in-process tier)
EXACT_HEALTH = web.AppKey("exact_health", BackendHealth)
#: the semantic tier, or None while it is disabled or not (yet) open
SEMANTIC_TIER: web.AppKey[SemanticTier | None] = web.AppKey("semantic_tier")
SEMANTIC_HEALTH = web.AppKey("semantic_health", BackendHealth)

# metrics/admin app
#: the API app whose state the metrics and admin endpoints report
API_APP = web.AppKey("api_app", web.Application)
