"""Draw issue 9's curves: QQP precision/recall (plain cosine threshold against the match
verifier) and GPTCache's mock benchmark (our methods against GPTCache's published figures).

    python scripts/plot_issue9.py --run "default model, 5-fold CV" /work/verifier/default-cv-ship \
        [--run "fine-tuned model, fold 0" /work/verifier/ft-fold0] --out docs/issue9-curves.png

Each run is the ``--json``/``--scores`` prefix of ``scripts/train_verifier.py`` (``PREFIX.json``
and ``PREFIX.npz``).  Needs matplotlib (the ``plots`` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

#: GPTCache's published mock-benchmark figures (SQLite + FAISS + its ONNX model): threshold ->
#: (right, wrong, miss) of 999 (shared/data/README.md)
GPTCACHE = {0.95: (425, 25, 549), 0.90: (804, 77, 118), 0.80: (904, 92, 3)}
GOAL = (0.60, 0.85)


def pr_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    y = labels[order].astype(bool)
    tp = np.cumsum(y)
    return tp / max(int(y.sum()), 1), tp / np.arange(1, len(y) + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=2, action="append", metavar=("LABEL", "PREFIX"), required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/issue9-curves.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (qqp, mock) = plt.subplots(1, 2, figsize=(12, 5))
    for label, prefix in args.run:
        scores = np.load(prefix + ".npz")
        results = json.loads(Path(prefix + ".json").read_text())
        for method in [m for m in results["methods"] if m in scores.files]:
            recall, precision = pr_curve(scores[method], scores["labels"])
            qqp.plot(recall, precision, label=f"{method}, {label}", linewidth=1.2)
            sweep = results["methods"][method]["gptcache_mock_sweep"]
            right = [s["right"] for s in sweep]
            wrong_share = [100 * s["wrong"] / max(s["right"] + s["wrong"], 1) for s in sweep]
            mock.plot(right, wrong_share, marker=".", label=f"{method}, {label}")
    qqp.scatter([GOAL[0]], [GOAL[1]], marker="*", s=150, color="black", zorder=5, label="issue 9 goal")
    qqp.set(xlabel="recall (duplicates served)", ylabel="precision (hits that are duplicates)", xlim=(0, 1),
            ylim=(0.5, 1.0), title="QQP dev, held-out scores (a stored, b asked)")
    qqp.grid(alpha=0.3)
    qqp.legend(fontsize=7)
    right = [r for r, _, _ in GPTCACHE.values()]
    share = [100 * w / (r + w) for r, w, _ in GPTCACHE.values()]
    mock.scatter(right, share, marker="s", color="black", zorder=5, label="GPTCache published (0.95 / 0.90 / 0.80)")
    mock.axhline(4, color="grey", linestyle="--", linewidth=0.8)
    mock.axvline(0.9 * 999, color="grey", linestyle="--", linewidth=0.8)
    mock.set(xlabel="right hits (of 999)", ylabel="wrong hits, % of hits", xlim=(0, 1000), ylim=(0, 15),
             title="GPTCache mock benchmark (goal: right >= 899, wrong <= 4 %)")
    mock.grid(alpha=0.3)
    mock.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
