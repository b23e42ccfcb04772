"""GPTCache given what the sidecar has: the same embedding function and the same entries.

GPTCache (``pip install gptcache``; 0.1.44 installs and imports on Python 3.11 as is) is set up
the way its README sets up a similarity cache: ``init_similar_cache`` with its default stores
(SQLite for questions and answers, FAISS ``IDMap,Flat`` for vectors) and
``SearchDistanceEvaluation``, its data manager sized for every entry (the default one keeps
1,000 and evicts the rest); only the embedding function is ours (the shipped ONNX model,
one thread, as the sidecar runs it) and the threshold is the sidecar's cosine threshold in
GPTCache's terms.  The entries are the sidecar's entries (same questions, same vectors, imported
with ``DataManager.import_data``); the lookups are the paraphrases the sidecar's semantic phase
asks, one ``gptcache.adapter.api.get`` call each (embedding, search, SQLite fetch, evaluation).

Run by the harness in its own process, pinned to the sidecar's core:
``python -m bench.gptcache_side --entries N --queries Q --json FILE``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import load_corpus
from bench.prefill import chat_body
from bench.resources import cpu_seconds
from bench.vectors import entry_vectors
from tests.upstream import chat_content

IMPORT_BATCH = 5000
SHM = "/dev/shm"


class SameEmbedding:
    """GPTCache's embedding interface (``to_embeddings``, ``dimension``) over the sidecar's model."""

    def __init__(self) -> None:
        from llmcache_sidecar.default_model import default_model_files
        from llmcache_sidecar.embedder import OnnxEmbedder

        self._embedder = OnnxEmbedder(default_model_files(), "cpu")

    @property
    def dimension(self) -> int:
        return self._embedder.dim

    def to_embeddings(self, data: str, **_: Any) -> np.ndarray:
        return self._embedder.embed([data])[0]


def gptcache_threshold(cosine: float) -> float:
    """GPTCache's ``similarity_threshold`` that hits exactly when cosine >= ``cosine``.

    FAISS returns the squared L2 distance, 2 - 2 cos for unit vectors; SearchDistanceEvaluation
    scores 4 - distance = 2 + 2 cos on the range [0, 4], and a hit needs score >= 4 * threshold."""
    return (1 + cosine) / 2


def run(entries: int, queries: int, threshold: float, asked: list[str] | None = None) -> dict[str, Any]:
    import gptcache
    from gptcache import Cache, Config
    from gptcache.adapter.api import get, init_similar_cache
    from gptcache.manager import manager_factory

    corpus = load_corpus(entries)
    vectors = entry_vectors(entries)
    # in memory when /dev/shm exists: no disk write (GPTCache commits to SQLite on every hit)
    # slows it down here; removed at exit, after GPTCache's own exit hook has flushed into it
    tmp = tempfile.mkdtemp(prefix="llmcache-bench-gptcache-", dir=SHM if Path(SHM).is_dir() else None)
    atexit.register(shutil.rmtree, tmp, True)
    cache = Cache()
    embedding = SameEmbedding()
    # the default data manager keeps 1,000 entries (LRU eviction): room for all of them (its
    # max_size argument is ignored by the memory eviction, which reads eviction_params)
    data_manager = manager_factory("sqlite,faiss", data_dir=tmp, vector_params={"dimension": embedding.dimension},
                                   eviction_params={"max_size": entries + queries + 1})
    init_similar_cache(cache_obj=cache, embedding=embedding, data_manager=data_manager,
                       config=Config(similarity_threshold=gptcache_threshold(threshold)))
    started = time.perf_counter()
    for start in range(0, entries, IMPORT_BATCH):
        questions = corpus.stored[start:start + IMPORT_BATCH]
        answers = [chat_content(chat_body(q)) for q in questions]
        cache.data_manager.import_data(questions, answers, list(vectors[start:start + IMPORT_BATCH]),
                                       [None] * len(questions))
    import_seconds = time.perf_counter() - started
    asked = asked or [text for text, _ in corpus.paraphrases]
    get(asked[0], cache_obj=cache)  # warm-up (first call initialises lazily)
    latencies, hits = [], 0
    cpu_before = cpu_seconds(os.getpid())
    started = time.perf_counter()
    for number in range(queries):
        sent = time.perf_counter()
        answer = get(asked[number % len(asked)], cache_obj=cache)
        latencies.append(time.perf_counter() - sent)
        hits += answer is not None
    wall = time.perf_counter() - started
    cpu = cpu_seconds(os.getpid()) - cpu_before
    ms = np.array(latencies) * 1000
    return {"gptcache_version": getattr(gptcache, "__version__", "unknown"), "entries": entries,
            "lookups": queries, "hits": hits, "import_seconds": round(import_seconds, 1),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "throughput": queries / wall, "cpu_seconds_per_lookup": cpu / queries,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, required=True)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--threshold", type=float, default=0.93, help="cosine threshold (the sidecar's)")
    parser.add_argument("--questions", type=Path, help="JSON list of the questions to ask (default: the paraphrases)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    asked = json.loads(args.questions.read_text()) if args.questions else None
    result = run(args.entries, args.queries, args.threshold, asked)
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
