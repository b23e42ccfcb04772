"""What the match verifier adds to a semantic lookup: the time of the decision, verifier on
against the plain cosine threshold, measured on the tier's own decision code.

    OMP_NUM_THREADS=1 python scripts/verifier_latency.py [--model DIR] [--verifier FILE] [--rounds 5000]

500 QQP dev questions (``a``) are stored in an in-process index (one scope); each round asks one
``b``: the index search plus the decision (``MilvusSemanticTier._decide``), timed with and without
the verifier.  The embedding (the same either way, ~8 ms) is left out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import load_rows  # noqa: E402

from llmcache_sidecar.calibration import embed_texts  # noqa: E402
from llmcache_sidecar.config import load_settings  # noqa: E402
from llmcache_sidecar.default_model import model_files, sha256_of  # noqa: E402
from llmcache_sidecar.embedder import OnnxEmbedder  # noqa: E402
from llmcache_sidecar.tiers.semantic import MilvusSemanticTier, SemanticOptions  # noqa: E402
from llmcache_sidecar.tiers.vector_index import IndexEntry, VectorIndex  # noqa: E402
from llmcache_sidecar.verifier import match_policy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--verifier", default=None, help="verifier file (default: the packaged one)")
    args = parser.parse_args()
    rows = load_rows()[:500]
    files = model_files(args.model)
    embedder = OnnxEmbedder(files, "cpu", threads=1)
    stored = embed_texts(embedder, [r["a"] for r in rows])
    asked = embed_texts(embedder, [r["b"] for r in rows])
    index = VectorIndex(embedder.dim)
    for i, (row, vector) in enumerate(zip(rows, stored)):
        index.add(IndexEntry(f"k{i}", vector, "r", "", "s", 0.0, 4e9, row["a"]))
    env = {"LLMCACHE_UPSTREAM_URL": "http://up:8000", **({"LLMCACHE_EMBEDDING_MODEL": args.model} if args.model else {}),
           **({"LLMCACHE_VERIFIER_PATH": args.verifier} if args.verifier else {})}
    report = {}
    for verifier in ("off", "on"):
        policy = match_policy(load_settings({**env, "LLMCACHE_VERIFIER": verifier}), sha256_of(files.model))
        tier = MilvusSemanticTier.__new__(MilvusSemanticTier)  # only the decision is exercised
        tier.options = SemanticOptions(threshold=policy.threshold, ttl_seconds=1, policy=policy)
        times, served = [], 0
        for n in range(args.rounds):
            i = n % len(rows)
            started = time.perf_counter()
            hits = index.candidates("r", "", "s", asked[i], 1.0, policy.candidates)
            served += tier._decide(rows[i]["b"], asked[i], hits) is not None
            times.append(time.perf_counter() - started)
        report[f"verifier {verifier}"] = {"p50_ms": round(1000 * float(np.median(times)), 3),
                                          "p99_ms": round(1000 * float(np.quantile(times, 0.99)), 3),
                                          "served": served}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
