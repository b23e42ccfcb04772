"""GPTCache's own benchmark on the semantic tier's model: store every origin, ask every similar.

A hit on the asked pair's own origin is *right*, a hit on another origin *wrong*, no hit a *miss*
(see ../shared/data/README.md).  Prints a markdown table with GPTCache's published figures.

    python scripts/gptcache_mock.py [--pairs ../shared/data/gptcache-mock-pairs.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "sidecar"))

from llmcache_sidecar.calibration import gptcache_mock_benchmark  # noqa: E402
from llmcache_sidecar.config import DEFAULT_SIMILARITY_THRESHOLD  # noqa: E402
from llmcache_sidecar.default_model import default_model_files  # noqa: E402
from llmcache_sidecar.embedder import OnnxEmbedder  # noqa: E402

#: GPTCache's published results (SQLite + FAISS + its ONNX embedding): threshold -> right, wrong, miss
PUBLISHED = {0.95: (425, 25, 549), 0.90: (804, 77, 118), 0.80: (904, 92, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=REPO.parent / "shared/data/gptcache-mock-pairs.json")
    args = parser.parse_args()
    rows = json.loads(args.pairs.read_text())
    embedder = OnnxEmbedder(default_model_files(), "cpu")
    thresholds = sorted({0.80, 0.90, DEFAULT_SIMILARITY_THRESHOLD, 0.95})
    outcomes = gptcache_mock_benchmark(embedder, [r["origin"] for r in rows], [r["similar"] for r in rows], thresholds)
    print("| threshold | llmcache right / wrong / miss | wrong share of hits | GPTCache right / wrong / miss | GPTCache wrong share |")
    print("|---|---|---|---|---|")
    for o in outcomes:
        label = f"{o.threshold:.2f}" + (" (default)" if o.threshold == DEFAULT_SIMILARITY_THRESHOLD else "")
        share = o.wrong / max(o.right + o.wrong, 1)
        published = PUBLISHED.get(round(o.threshold, 2))
        theirs = f"{published[0]} / {published[1]} / {published[2]}" if published else "—"
        their_share = f"{published[1] / (published[0] + published[1]):.1%}" if published else "—"
        print(f"| {label} | {o.right} / {o.wrong} / {o.miss} | {share:.1%} | {theirs} | {their_share} |")


if __name__ == "__main__":
    main()
