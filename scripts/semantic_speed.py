"""Semantic lookup latency at 1k / 10k / 100k entries: the real tier, Milvus Lite, the real model.

For each size N: a fresh Milvus Lite collection gets N entries in one scope — 500 real questions
(QQP ``a`` texts, embedded by the shipped model) plus N-500 random unit vectors (the worst case
for an HNSW graph) — then a tier is opened on it (timing its load from Milvus), and the 500
paraphrases (``b``) are asked one at a time through ``tier.lookup`` (embedding + index search).
Embedding alone and the index search alone are timed on the same queries too.

    python scripts/semantic_speed.py [--sizes 1000,10000,100000] [--pairs ../shared/data/qqp-pairs-dev.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "sidecar"))

from llmcache_sidecar.calibration import embed_texts, load_pairs  # noqa: E402
from llmcache_sidecar.default_model import default_model_files  # noqa: E402
from llmcache_sidecar.embedder import BatchingEmbedder, OnnxEmbedder  # noqa: E402
from llmcache_sidecar.tiers.base import CacheRequest  # noqa: E402
from llmcache_sidecar.tiers.milvus_store import MilvusStore  # noqa: E402
from llmcache_sidecar.tiers.semantic import MilvusSemanticTier, SemanticOptions  # noqa: E402
from llmcache_sidecar.tiers.vector_index import IndexEntry  # noqa: E402

QUERIES = 500


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.array(values) * 1000, p))


async def run_size(size: int, root: Path, embedder: OnnxEmbedder, stored: list[str], asked: list[str]) -> dict[str, float]:
    uri = str(root / f"speed-{size}.db")
    cache = f"speed{size}"
    store = MilvusStore(uri, cache, embedder.dim)
    await store.connect()
    rng = np.random.default_rng(size)
    real = embed_texts(embedder, stored)
    now = time.time()
    started = time.perf_counter()
    for start in range(0, size, 2000):
        count = min(2000, size - start)
        vectors = rng.standard_normal((count, embedder.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        entries = []
        for i in range(count):
            n = start + i
            vector = real[n] if n < len(stored) else vectors[i]
            entries.append(IndexEntry(f"llmcache:{cache}:r::e:{n}", vector, "r", "", "s", now, now + 86400))
        await store.upsert(entries)
    insert_s = time.perf_counter() - started
    await store.aclose()

    batcher = BatchingEmbedder(embedder)
    tier = MilvusSemanticTier(batcher, MilvusStore(uri, cache, embedder.dim),
                              SemanticOptions(threshold=0.0, ttl_seconds=86400))
    started = time.perf_counter()
    await tier.start()
    await tier.wait_loaded()
    load_s = time.perf_counter() - started
    lookups, embeddings, searches, right = [], [], [], 0
    for n, query in enumerate(asked):
        request = CacheRequest(cache, "r", "", "s", query, f"llmcache:{cache}:r::e:q{n}")
        t0 = time.perf_counter()
        match = await tier.lookup(request)
        lookups.append(time.perf_counter() - t0)
        right += match is not None and match.key.endswith(f":e:{n}")
        t0 = time.perf_counter()
        vector = await batcher.embed(query + " ")  # not in the tier's recent-vector cache
        embeddings.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        tier.index.search("r", "", "s", vector, time.time())
        searches.append(time.perf_counter() - t0)
    await tier.aclose()
    await batcher.aclose()
    return {"entries": size, "insert_s": round(insert_s, 1), "load_s": round(load_s, 1),
            "lookup_p50_ms": round(percentile(lookups, 50), 2), "lookup_p99_ms": round(percentile(lookups, 99), 2),
            "embed_p50_ms": round(percentile(embeddings, 50), 2), "embed_p99_ms": round(percentile(embeddings, 99), 2),
            "search_p50_ms": round(percentile(searches, 50), 3), "search_p99_ms": round(percentile(searches, 99), 3),
            "nearest_is_own_pair": round(right / len(asked), 3)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--pairs", type=Path, default=REPO.parent / "shared/data/qqp-pairs-dev.jsonl")
    args = parser.parse_args()
    pairs = [p for p in load_pairs(args.pairs) if p.duplicate][:QUERIES]
    embedder = OnnxEmbedder(default_model_files(), "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            print(json.dumps(await run_size(size, Path(tmp), embedder, [p.a for p in pairs], [p.b for p in pairs])),
                  flush=True)


if __name__ == "__main__":
    asyncio.run(main())
