"""The sidecar's Prometheus metrics, in a registry of its own (one per app, so several sidecars
can run in one process, as the tests do).  Under ``--workers`` (prometheus_client's multiprocess
mode, :mod:`.workers`) every worker writes its values to a shared directory and a scrape reports
the sum over the workers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values

#: values of ``llmcache_requests_total{result}`` (the ``X-LLMCache`` header values, and
#: ``invalid`` for requests refused with 400/413)
RESULTS = ("hit-exact", "hit-semantic", "miss", "bypass", "invalid")

_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        #: values go to PROMETHEUS_MULTIPROC_DIR (read by prometheus_client when first imported)
        self.multiprocess = values.ValueClass is not values.MutexValue
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests_total = Counter("llmcache_requests", "Cacheable requests by result", ["result"], registry=r)
        self.lookup_seconds = Histogram("llmcache_lookup_seconds", "Time of one cache tier lookup", ["tier"],
                                        buckets=_FAST_BUCKETS, registry=r)
        self.upstream_seconds = Histogram("llmcache_upstream_seconds",
                                          "Time of one upstream call, until its answer is complete",
                                          buckets=_SLOW_BUCKETS, registry=r)
        self.embedding_seconds = Histogram("llmcache_embedding_seconds", "Time to embed one query",
                                           buckets=_FAST_BUCKETS, registry=r)
        self.tokens_saved_total = Counter("llmcache_tokens_saved",
                                          "Tokens answered from the cache (usage.total_tokens of hits)", registry=r)
        # every worker counts the same shared tiers: a scrape reports the latest count
        self.entries = Gauge("llmcache_entries", "Entries in a cache tier (refreshed on scrape)", ["tier"],
                             multiprocess_mode="mostrecent", registry=r)
        self.invalidated_total = Counter("llmcache_invalidated", "Entries deleted by invalidations", ["tier"],
                                         registry=r)
        self.backend_errors_total = Counter("llmcache_backend_errors", "Failed cache backend calls", ["backend"],
                                            registry=r)
        self.speculative_aborted_total = Counter(
            "llmcache_speculative_aborted", "Upstream calls sent during a semantic lookup (speculative_upstream) "
            "and aborted because it hit", registry=r)
        # children looked up once: the hot path only increments
        self.result = {result: self.requests_total.labels(result=result) for result in RESULTS}
        self.lookup_exact = self.lookup_seconds.labels(tier="exact")
        self.lookup_semantic = self.lookup_seconds.labels(tier="semantic")

    def exposition(self) -> bytes:
        """The text a scrape gets: this registry, or every worker's values in multiprocess mode."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)
