"""Issue 9 experiment: the shipped verifier's held-out scores stacked with a cross-encoder's.

Reads the out-of-fold scores of ``train_verifier.py --scores`` (5-fold CV, the blend verifier)
and of ``crossencoder_experiment.py`` for every fold it ran (``DIR/fold<k>/scores.npz``), and
prints recall at precision 0.75-0.90 per fold and pooled over those folds for: the cosine, the
verifier, the cross-encoder, ``(1 - w) * logit(verifier) + w * cross-encoder logit``, and the
same with the cross-encoder's logit floored (``max(logit, floor)``: a "no" from it can only pull
the verifier down so far); then
GPTCache's mock benchmark at the stacked cut for precision 0.85 (the cross-encoder logits of the
fold models averaged: the nearest origin of each question, as the sidecar checks it).

    python scripts/crossencoder_stack.py --verifier /work/ce/blend-cv.npz --runs /work/ce
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import recall_at_precision  # noqa: E402

TARGETS = (0.75, 0.80, 0.85, 0.90)
WEIGHTS = (0.25, 0.5)
#: floors of the cross-encoder logit, with w = 0.25
FLOORS = (-2.0, 0.0, 1.0)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def curve(scores: np.ndarray, y: np.ndarray) -> list[float]:
    return [round(recall_at_precision(scores, y, t)[0], 3) for t in TARGETS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verifier", type=Path, required=True, help="train_verifier.py --scores output (5-fold CV)")
    parser.add_argument("--runs", type=Path, required=True, help="directory of crossencoder_experiment.py's fold<k>/")
    args = parser.parse_args()

    v = np.load(args.verifier)
    y_all, folds_all = v["labels"], v["folds"]
    runs = {k: np.load(args.runs / f"fold{k}/scores.npz") for k in range(5)
            if (args.runs / f"fold{k}/scores.npz").exists()}
    keep = np.isin(folds_all, list(runs))
    y, folds = y_all[keep], folds_all[keep]
    methods = {"cosine": v["cosine"][keep], "verifier": logit(v["trees"][keep]), "cross-encoder": np.empty(len(y))}
    for k, run in runs.items():
        assert (run["labels"] == y[folds == k]).all(), f"fold {k}: the pair order differs"
        methods["cross-encoder"][folds == k] = run["heldout"]
    for w in WEIGHTS:
        methods[f"stack w={w}"] = (1 - w) * methods["verifier"] + w * methods["cross-encoder"]
    for floor in FLOORS:
        floored = np.maximum(methods["cross-encoder"], floor)
        methods[f"stack w=0.25 floor={floor}"] = 0.75 * methods["verifier"] + 0.25 * floored
    report: dict = {"folds": sorted(runs), "pairs": int(len(y)), "targets": TARGETS, "methods": {}}
    for name, scores in methods.items():
        per_fold = [round(recall_at_precision(scores[folds == k], y[folds == k])[0], 3) for k in sorted(runs)]
        report["methods"][name] = {"pooled": curve(scores, y), "per_fold_at_0.85": per_fold}
    if "mock_trees" in v.files:
        own = v["mock_own"]
        ce_mock = np.mean([run["mock"] for run in runs.values()], axis=0)
        mocks = [("verifier", logit(v["mock_trees"]))]
        mocks += [(f"stack w={w}", (1 - w) * logit(v["mock_trees"]) + w * ce_mock) for w in WEIGHTS]
        mocks += [(f"stack w=0.25 floor={floor}", 0.75 * logit(v["mock_trees"]) + 0.25 * np.maximum(ce_mock, floor))
                  for floor in FLOORS]
        for name, mock in mocks:
            cut = recall_at_precision(methods[name], y)[1]
            hit = mock >= cut
            report["methods"][name]["gptcache_at_0.85_cut"] = {"right": int((hit & own).sum()),
                                                               "wrong": int((hit & ~own).sum())}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
