"""One point of the entries curve: the sidecar's in-process index at N entries, built by the
product's own code path, its memory and its lookup latency.

What it measures, in a fresh process (``python -m bench.curve --entries N --json FILE``):

1. the shipped ONNX model and the questions are loaded; resident memory is read (the baseline);
2. N unit vectors: the cached embeddings of the corpus's stored questions (:mod:`bench.vectors`:
   real questions, then synthetic ones) as far as they go, then perturbed copies of those
   (:func:`bench.vectors.perturbed`) — at 1,000,000 entries, 900,000 of them;
3. :meth:`VectorIndex.add_all` puts them in one partition (one scope: the worst case, every
   lookup searches all N), exactly as the semantic tier loads Milvus rows at start-up (numpy up to
   2,048 entries, an HNSW graph above, one build thread unless ``--build-threads``); timed;
4. the vectors and entry objects are dropped; resident memory again: the index's cost is the
   difference, and the process's RSS is what a sidecar would add to its own baseline;
5. paraphrases of stored questions are embedded one at a time (the real model, one thread) and
   searched: embedding, search and both together, p50/p99; whether the entry found is the
   paraphrased question itself, and whether it is the true nearest entry (recall at 1, against a
   brute-force search done before the build).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import load_corpus
from bench.resources import rss_bytes
from bench.vectors import entry_vectors, perturbed

#: embedded stored questions available (the rest of a larger curve point is perturbed copies)
EMBEDDED_MAX = 100_000


def _trim() -> None:
    """Give freed heap memory back to the OS, so RSS shows what is still in use."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _exact_nearest(vectors: np.ndarray, queries: np.ndarray) -> list[int]:
    """The true nearest stored vector of each query (brute force, in blocks): what the index's
    answer is checked against (its recall at 1)."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    where = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(vectors), 100_000):
        scores = vectors[start:start + 100_000] @ queries.T
        top = scores.argmax(axis=0)
        better = scores[top, np.arange(len(queries))] > best
        best[better] = scores[top, np.arange(len(queries))][better]
        where[better] = start + top[better]
    return [int(n) for n in where]


def measure(entries: int, queries: int, build_threads: int | None) -> dict[str, Any]:
    from llmcache_sidecar.default_model import default_model_files
    from llmcache_sidecar.embedder import OnnxEmbedder
    from llmcache_sidecar.tiers import vector_index
    from llmcache_sidecar.tiers.vector_index import IndexEntry, VectorIndex

    if build_threads is not None:
        vector_index.BUILD_THREADS = build_threads
    embedder = OnnxEmbedder(default_model_files(), "cpu")
    embedder.embed(["warm-up"])
    corpus = load_corpus(min(entries, EMBEDDED_MAX))
    _trim()
    baseline = rss_bytes(os.getpid())
    real = entry_vectors(len(corpus.stored))
    vectors = real if entries <= len(real) else np.concatenate([real, perturbed(real, entries - len(real))])
    asked = corpus.paraphrases[:queries]
    # one at a time, as lookups embed (a large batch would grow onnxruntime's memory arena)
    exact_nearest = _exact_nearest(vectors, np.stack([embedder.embed([text])[0] for text, _ in asked]))
    now = time.time()
    index = VectorIndex(embedder.dim)
    keys = [f"llmcache:bench:default::e:{n:064x}" for n in range(entries)]
    started = time.perf_counter()
    index.add_all(IndexEntry(keys[n], vectors[n], "default", "", "scope", now, now + 86400) for n in range(entries))
    build_seconds = time.perf_counter() - started
    del vectors, real, keys
    _trim()
    loaded = rss_bytes(os.getpid())
    embed_ms, search_ms, total_ms, own, found = [], [], [], 0, 0
    for (text, position), nearest in zip(asked, exact_nearest):
        t0 = time.perf_counter()
        vector = embedder.embed([text])[0]
        t1 = time.perf_counter()
        hit = index.search("default", "", "scope", vector, time.time())
        t2 = time.perf_counter()
        embed_ms.append((t1 - t0) * 1000)
        search_ms.append((t2 - t1) * 1000)
        total_ms.append((t2 - t0) * 1000)
        own += hit is not None and hit.key == f"llmcache:bench:default::e:{position:064x}"
        found += hit is not None and hit.key == f"llmcache:bench:default::e:{nearest:064x}"

    def pct(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 3)

    return {"entries": entries, "embedded": min(entries, EMBEDDED_MAX),
            "perturbed": max(0, entries - EMBEDDED_MAX), "mode": "numpy" if entries <= vector_index.HNSW_FROM else "hnsw",
            "build_threads": vector_index.BUILD_THREADS, "build_seconds": round(build_seconds, 1),
            "rss_baseline_bytes": baseline, "rss_bytes": loaded, "index_bytes": loaded - baseline,
            "queries": len(asked), "nearest_is_own": round(own / max(1, len(asked)), 3),
            "recall_at_1": round(found / max(1, len(asked)), 3),
            "lookup_p50_ms": pct(total_ms, 50), "lookup_p99_ms": pct(total_ms, 99),
            "embed_p50_ms": pct(embed_ms, 50), "embed_p99_ms": pct(embed_ms, 99),
            "search_p50_ms": pct(search_ms, 50), "search_p99_ms": pct(search_ms, 99)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, required=True)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--build-threads", type=int, help="HNSW insertion threads (default: the product's, 1)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    result = measure(args.entries, args.queries, args.build_threads)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
