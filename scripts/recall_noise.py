"""Issue 9: how much recall at precision 0.85 moves with the sample alone (bootstrap).

The measure is the most recall any cut keeps at precision >= 0.85: on a few thousand pairs the
precision curve is jagged there, so the best cut also picks up luck. This resamples the scored
pairs (with replacement) and prints the spread of the measure, for the shipped verifier's 5-fold
out-of-fold scores (``train_verifier.py --scores``), pooled and on fold 0, and for each
``crossencoder_experiment.py`` run given (fold 0, stacked with the verifier as in
``crossencoder_stack.py``, w = 0.25), with its gain over the verifier on the same resampled pairs.

    python scripts/recall_noise.py --verifier /work/ce/blend-cv.npz --runs /work/ce/base /work/ce/seed1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crossencoder_stack import logit  # noqa: E402
from qqp_folds import recall_at_precision  # noqa: E402


def spread(scores: np.ndarray, labels: np.ndarray, draws: int, rng: np.random.Generator) -> str:
    measured = recall_at_precision(scores, labels)[0]
    samples = [recall_at_precision(scores[i], labels[i])[0]
               for i in (rng.integers(0, len(scores), len(scores)) for _ in range(draws))]
    low, mid, high = np.quantile(samples, [0.05, 0.5, 0.95])
    return f"{measured:.3f}  (bootstrap median {mid:.3f}, 90 % of draws in {low:.3f}-{high:.3f})"


def paired_gain(better: np.ndarray, base: np.ndarray, labels: np.ndarray, draws: int,
                rng: np.random.Generator) -> str:
    """The gain of one score over another on the same resampled pairs (what a comparison needs)."""
    gains = []
    for _ in range(draws):
        i = rng.integers(0, len(labels), len(labels))
        gains.append(recall_at_precision(better[i], labels[i])[0] - recall_at_precision(base[i], labels[i])[0])
    low, high = np.quantile(gains, [0.05, 0.95])
    return f"gain over the verifier: 90 % of draws in {low:+.3f} to {high:+.3f}, {np.mean(np.array(gains) > 0):.0%} > 0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verifier", type=Path, required=True)
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="directories holding fold0/scores.npz")
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    v = np.load(args.verifier)
    y, folds, verifier = v["labels"], v["folds"], logit(v["trees"])
    print(f"verifier, 5 folds pooled ({len(y)} pairs): {spread(verifier, y, args.draws, rng)}")
    held = folds == 0
    print(f"verifier, fold 0 ({int(held.sum())} pairs): {spread(verifier[held], y[held], args.draws, rng)}")
    for run in args.runs:
        ce = np.load(run / "fold0/scores.npz")
        assert (ce["labels"] == y[held]).all(), f"{run}: the pair order differs"
        stacked = 0.75 * verifier[held] + 0.25 * ce["heldout"]
        print(f"stack with {run}, fold 0: {spread(stacked, y[held], args.draws, rng)}")
        print(f"    {paired_gain(stacked, verifier[held], y[held], args.draws, rng)}")


if __name__ == "__main__":
    main()
