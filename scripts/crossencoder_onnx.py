"""Issue 9 experiment: the cross-encoder as the sidecar runs it (int8 ONNX, one thread, asked
only where the verifier's probability reaches a gate), its recall and its cost per lookup.

Exports one fold's model of ``crossencoder_experiment.py`` with the product's code
(``crossencoder_training.export_crossencoder``, read back by ``crossencoder.CrossEncoder``: both
orders in one call, averaged), scores that fold's held-out pairs, compares with the torch logits
the experiment saved, stacks it with the verifier's out-of-fold probability for the pairs whose
probability lies in a band (elsewhere the verifier's logit alone), and times single lookups
(one pair, both orders) on one thread.

    OMP_NUM_THREADS=1 python scripts/crossencoder_onnx.py --run /work/ce/fold0 --fold 0 \
        --verifier /work/ce/blend-cv.npz --out /work/ce/fold0-onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import load_rows, question_folds, recall_at_precision  # noqa: E402

from llmcache_sidecar.crossencoder import CrossEncoder, logit  # noqa: E402
from llmcache_sidecar.crossencoder_training import MAX_TOKENS, WEIGHT, export_crossencoder  # noqa: E402

#: (low, high) verifier probability where the cross-encoder is asked
BANDS = ((0.0, 1.0), (0.1, 1.0), (0.3, 1.0), (0.5, 1.0), (0.3, 0.9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="crossencoder_experiment.py --out of one fold")
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--verifier", type=Path, required=True, help="train_verifier.py --scores output (5-fold CV)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timed", type=int, default=2000, help="single lookups timed")
    args = parser.parse_args()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = str(args.run / "model")
    model_path, tokenizer_path = export_crossencoder(AutoModelForSequenceClassification.from_pretrained(source),
                                                     AutoTokenizer.from_pretrained(source), args.out)
    encoder = CrossEncoder(model_path, tokenizer_path, MAX_TOKENS)
    rows = load_rows()
    folds = question_folds(rows)
    test = [r for r, f in zip(rows, folds) if f == args.fold]
    stored, asked = [r["a"] for r in test], [r["b"] for r in test]
    ce = np.concatenate([encoder.logits(stored[i:i + 64], asked[i:i + 64]) for i in range(0, len(test), 64)])
    saved = np.load(args.run / "scores.npz")
    y = saved["labels"]
    v = np.load(args.verifier)
    p = v["trees"][v["folds"] == args.fold]
    assert (v["labels"][v["folds"] == args.fold] == y).all(), "the pair order differs"
    lv = logit(p)
    recall = {"verifier": round(recall_at_precision(p, y)[0], 4),
              "torch, every pair": round(recall_at_precision((1 - WEIGHT) * lv + WEIGHT * saved["heldout"], y)[0], 4)}
    for lo, hi in BANDS:
        band = (p >= lo) & (p <= hi)
        stacked = np.where(band, (1 - WEIGHT) * lv + WEIGHT * ce, lv)
        recall[f"int8, asked for probability {lo}-{hi} ({band.mean():.0%} of pairs)"] = round(
            recall_at_precision(stacked, y)[0], 4)

    rng = np.random.default_rng(0)
    picks = rng.choice(len(test), size=min(args.timed, len(test)), replace=False)
    for i in picks[:200]:
        encoder.logits([stored[i]], [asked[i]])
    times = []
    for i in picks:
        started = time.perf_counter()
        encoder.logits([stored[i]], [asked[i]])
        times.append((time.perf_counter() - started) * 1000)
    report = {"fold": args.fold, "pairs": len(y), "bytes": model_path.stat().st_size,
              "int8_vs_torch": {"corr": round(float(np.corrcoef(ce, saved["heldout"])[0, 1]), 4),
                                "max_abs": round(float(np.abs(ce - saved["heldout"]).max()), 3)},
              "recall_at_0.85": recall,
              "lookup_ms": {q: round(float(np.percentile(times, int(q[1:]))), 2) for q in ("p50", "p90", "p99")}}
    text = json.dumps(report, indent=1)
    print(text)
    (args.out / "report.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
