"""Issue 9: is the verifier short of labelled pairs or of embedding?  Recall against training-set size.

The shipped protocol of ``train_verifier.py`` (5-fold question-split CV, trees, lexical features,
rule-made pairs), but each training fold keeps only a random share of its labelled QQP pairs, and
its rule-made pairs are made from the kept pairs' questions, scaled alike: what a user of
``llmcache tune`` with fewer pairs would have.  The held-out folds are always scored in full, so
every share is measured on the same 10,000 pairs.  Printed per share and draw: pooled recall at
precision 0.80 / 0.85 / 0.90, and the per-fold recall at 0.85.  If recall still climbs from half
to all of the pairs, more labelled pairs are a lever; if it is flat, the embedding is the limit.

    OMP_NUM_THREADS=1 python scripts/verifier_learning_curve.py [--model DIR] --shares 0.25,0.5,1 --draws 2
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import load_rows, question_folds, recall_at_precision  # noqa: E402
from train_verifier import Vectors, as_verifier, fold_pairs, questions_of, scores_of  # noqa: E402

from llmcache_sidecar.verifier import verifier_from_dict  # noqa: E402
from llmcache_sidecar.verifier_training import Pair, fit_verifier, rule_pairs  # noqa: E402


def training_groups(rows: list[dict], folds: np.ndarray, train_folds: list[int], share: float, per_kind: int,
                    draw: int) -> list[tuple[list[Pair], list[Pair]]]:
    """(labelled, rule-made) pairs per training fold, ``share`` of the labelled ones kept."""
    groups = []
    for f in train_folds:
        labelled = fold_pairs(rows, folds, {f})
        if share < 1:
            labelled = random.Random(1000 * draw + f).sample(labelled, round(share * len(labelled)))
        made = [p for _, p in rule_pairs(questions_of(labelled), round(share * per_kind), seed=f)]
        groups.append((labelled, made))
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="ONNX model directory (default: the packaged model)")
    parser.add_argument("--shares", default="0.25,0.5,1")
    parser.add_argument("--draws", type=int, default=2, help="random subsets per share under 1")
    parser.add_argument("--per-kind", type=int, default=600, help="rule-made pairs per kind and training set at share 1 "
                                                                  "(as the shipped verifier: 600)")
    args = parser.parse_args()
    rows = load_rows()
    folds = question_folds(rows)
    vectors = Vectors(args.model)
    held = fold_pairs(rows, folds, set(range(5)))
    y = np.array([p.duplicate for p in held])
    print(f"{vectors.files.name}: {len(held)} held-out pairs; recall at precision 0.80 / 0.85 / 0.90 pooled, "
          f"0.85 per fold")
    for share in (float(s) for s in args.shares.split(",")):
        for draw in range(args.draws if share < 1 else 1):
            started = time.monotonic()
            scores = np.empty(len(held))
            trained_on = 0
            for k in range(5):
                groups = training_groups(rows, folds, [f for f in range(5) if f != k], share, args.per_kind // 4, draw)
                vectors.add([t for labelled, made in groups for p in (*labelled, *made) for t in (p.stored, p.asked)])
                fitted, weights = fit_verifier("trees", groups, vectors.known, lexical=True)
                trained_on += sum(len(labelled) for labelled, _ in groups)
                scores[folds == k] = scores_of(verifier_from_dict(as_verifier("trees", fitted, vectors, weights)),
                                               fold_pairs(rows, folds, {k}), vectors)
            pooled = " / ".join(f"{recall_at_precision(scores, y, p)[0]:.3f}" for p in (0.80, 0.85, 0.90))
            per_fold = " ".join(f"{recall_at_precision(scores[folds == k], y[folds == k])[0]:.2f}" for k in range(5))
            print(f"share {share:.2f} draw {draw}: ~{trained_on // 5} labelled pairs per model; {pooled}; "
                  f"per fold {per_fold} ({time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
