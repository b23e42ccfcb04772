"""Time one question's embedding (what a semantic lookup waits for) for the packaged model and
other model directories, in one run, interleaved, on one onnxruntime thread (the sidecar's).

    python scripts/embedding_latency.py DIR [DIR ...] [--questions 400]

Prints, per model: p50/p99 milliseconds per single-question call over the first QQP dev
questions, and the ratio of each p50 to the packaged model's.
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

from llmcache_sidecar.default_model import model_files  # noqa: E402
from llmcache_sidecar.embedder import OnnxEmbedder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="model directories (model.onnx + tokenizer.json)")
    parser.add_argument("--questions", type=int, default=400)
    args = parser.parse_args()
    names = ["packaged", *args.models]
    embedders = [OnnxEmbedder(model_files(None if n == "packaged" else n), "cpu", threads=1) for n in names]
    questions = [r["b"] for r in load_rows()[:args.questions]]
    for embedder in embedders:  # warm-up
        embedder.embed(questions[:5])
    times: list[list[float]] = [[] for _ in names]
    for question in questions:
        for i, embedder in enumerate(embedders):
            started = time.perf_counter()
            embedder.embed([question])
            times[i].append(time.perf_counter() - started)
    base = float(np.median(times[0]))
    print(json.dumps({name: {"p50_ms": round(1000 * float(np.median(t)), 2),
                             "p99_ms": round(1000 * float(np.quantile(t, 0.99)), 2),
                             "p50_ratio_to_packaged": round(float(np.median(t)) / base, 2)}
                      for name, t in zip(names, times)}, indent=1))


if __name__ == "__main__":
    main()
