"""Issue 9, step 1: can a verifier or guards over the candidate pair beat the plain cosine threshold?

Measured on the QQP dev pairs with 5-fold cross-validation split by question text
(``qqp_folds.py``: no question in both a training and a held-out fold), embeddings from the
shipped int8 model (the sidecar's own ``OnnxEmbedder``).  Each pair is a cache event (``a``
stored, ``b`` asked).  Methods, each giving one score per pair (a hit when score >= cut-off):

- ``cosine``: the plain threshold (the baseline; nothing to train);
- ``guards``: cosine, but a hit is refused when the two questions differ in numbers, negation or
  capitalised names, or are the same words in another order (reversed relation);
- ``logreg-small`` / ``logreg-full``: logistic regression over cosine + lexical + mismatch
  features (small), plus the elementwise ``|u-v|`` and ``u*v`` of the two embeddings (full);
- ``hgb-small`` / ``hgb-full``: scikit-learn's histogram gradient boosting on the same features.

Reported: recall at precision >= 0.85 on the pooled out-of-fold scores and per held-out fold,
and the precision/recall a held-out fold gets with the cut-off chosen on the other folds.

    OMP_NUM_THREADS=1 python scripts/verify_experiments.py [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sidecar"))
from qqp_folds import load_rows, precision_recall_at, question_folds, recall_at_precision  # noqa: E402

CACHE_DIR = Path("/tmp/llmcache-issue9")
TARGET = 0.85

NEGATIONS = {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot"}
WORD = re.compile(r"[A-Za-z0-9']+")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
STOP = {"a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "is", "are", "do", "does", "i",
        "you", "my", "what", "how", "why", "which", "who", "when", "where", "can", "it", "be", "with", "?"}


def embed_all(texts: list[str]) -> np.ndarray:
    """Vectors of the shipped int8 model, cached under /tmp by the texts' digest."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"int8-{digest}.npy"
    if path.exists():
        return np.load(path)
    from llmcache_sidecar.calibration import embed_texts
    from llmcache_sidecar.default_model import default_model_files
    from llmcache_sidecar.embedder import OnnxEmbedder

    vectors = embed_texts(OnnxEmbedder(default_model_files(), "cpu", threads=1), texts)
    CACHE_DIR.mkdir(exist_ok=True)
    np.save(path, vectors)
    return vectors


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text.replace("n't", " not"))]


def names(text: str) -> set[str]:
    """Capitalised words that are not the first word of the question: a cheap named-entity guess."""
    tokens = WORD.findall(text)
    return {t.lower() for t in tokens[1:] if t[:1].isupper() and t.lower() not in STOP and t != "I"}


def mismatches(a: str, b: str) -> dict[str, float]:
    wa, wb = words(a), words(b)
    sa, sb = set(wa), set(wb)
    na, nb = set(NUMBER.findall(a)), set(NUMBER.findall(b))
    ea, eb = names(a), names(b)
    ca, cb = sa - STOP, sb - STOP
    return {
        "numbers_differ": float(na != nb),
        "negation_differs": float(bool(sa & NEGATIONS) != bool(sb & NEGATIONS)),
        "names_differ": float(bool(ea and eb) and ea != eb),
        "reordered": float(sorted(wa) == sorted(wb) and wa != wb),
        "first_word_differs": float(wa[:1] != wb[:1]),
        "jaccard": len(sa & sb) / max(len(sa | sb), 1),
        "content_jaccard": len(ca & cb) / max(len(ca | cb), 1),
        "only_one_side": float(len(ca ^ cb)),
        "length_ratio": min(len(wa), len(wb)) / max(len(wa), len(wb), 1),
    }


def guard_refuses(m: dict[str, float]) -> bool:
    return bool(m["numbers_differ"] or m["negation_differs"] or m["names_differ"] or m["reordered"])


def features(rows: list[dict], va: np.ndarray, vb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cos = (va * vb).sum(axis=1)
    lexical = np.array([list(mismatches(r["a"], r["b"]).values()) for r in rows], dtype=np.float32)
    small = np.column_stack([cos, lexical])
    full = np.column_stack([small, np.abs(va - vb), va * vb])
    return cos, small, full


def out_of_fold(make, x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    scores = np.empty(len(y))
    for k in np.unique(folds):
        test = folds == k
        model = make().fit(x[~test], y[~test])
        scores[test] = model.predict_proba(x[test])[:, 1]
    return scores


def summarise(name: str, scores: np.ndarray, y: np.ndarray, folds: np.ndarray) -> dict:
    pooled, _ = recall_at_precision(scores, y, TARGET)
    per_fold = [recall_at_precision(scores[folds == k], y[folds == k], TARGET)[0] for k in np.unique(folds)]
    hit_right = hits = 0
    for k in np.unique(folds):
        _, cut = recall_at_precision(scores[folds != k], y[folds != k], TARGET)
        test = folds == k
        hit = scores[test] >= cut
        hits += int(hit.sum())
        hit_right += int((hit & y[test]).sum())
    return {"method": name, "recall_at_p85_pooled": round(pooled, 4),
            "recall_at_p85_per_fold": [round(r, 4) for r in per_fold],
            "transfer_precision": round(hit_right / max(hits, 1), 4),
            "transfer_recall": round(hit_right / max(int(y.sum()), 1), 4)}


def curve(scores: np.ndarray, y: np.ndarray, precisions=(0.75, 0.80, 0.85, 0.90, 0.95)) -> dict:
    return {f"{p:.2f}": round(recall_at_precision(scores, y, p)[0], 4) for p in precisions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = load_rows()
    y = np.array([r["duplicate"] for r in rows])
    folds = question_folds(rows)
    vectors = embed_all([r["a"] for r in rows] + [r["b"] for r in rows])
    va, vb = vectors[: len(rows)], vectors[len(rows):]
    cos, small, full = features(rows, va, vb)
    refused = np.array([guard_refuses(mismatches(r["a"], r["b"])) for r in rows])

    def logreg():
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))

    def hgb():
        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=15, random_state=0)

    methods = {"cosine": cos, "guards": np.where(refused, -1.0, cos)}
    methods["logreg-small"] = out_of_fold(logreg, small, y, folds)
    methods["logreg-full"] = out_of_fold(logreg, full, y, folds)
    methods["hgb-small"] = out_of_fold(hgb, small, y, folds)
    methods["hgb-full"] = out_of_fold(hgb, full, y, folds)
    results = {"pairs": len(rows), "duplicates": int(y.sum()), "fold_sizes": np.bincount(folds).tolist(),
               "guard_refuses": {"pairs": int(refused.sum()), "duplicates": int((refused & y).sum())},
               "methods": [], "curves": {}}
    print(f"{'method':14s} {'R@P.85 pooled':>14s} {'per fold':>32s} {'transfer P / R':>16s}")
    for name, scores in methods.items():
        s = summarise(name, scores, y, folds)
        results["methods"].append(s)
        results["curves"][name] = curve(scores, y)
        print(f"{name:14s} {s['recall_at_p85_pooled']:14.3f} {str(s['recall_at_p85_per_fold']):>32s} "
              f"{s['transfer_precision']:.3f} / {s['transfer_recall']:.3f}")
    print("recall at precision >= p (pooled out-of-fold):")
    for name, c in results["curves"].items():
        print(f"  {name:14s} " + "  ".join(f"P{p}: {r:.3f}" for p, r in c.items()))
    print(f"guards refuse {results['guard_refuses']['pairs']} pairs, "
          f"{results['guard_refuses']['duplicates']} of them duplicates")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
