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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sidecar"))
from near_misses import faithful_rewrite, near_misses  # noqa: E402
from qqp_folds import MOCK_PAIRS, load_rows, question_folds, recall_at_precision  # noqa: E402

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


def features(pairs: list[tuple[str, str]], va: np.ndarray, vb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cos = (va * vb).sum(axis=1)
    lexical = np.array([list(mismatches(a, b).values()) for a, b in pairs], dtype=np.float32)
    small = np.column_stack([cos, lexical])
    full = np.column_stack([small, np.abs(va - vb), va * vb])
    return cos, small, full


def out_of_fold(make, x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, list]:
    """Held-out scores of every pair, and the model of each fold (trained on the other folds)."""
    scores, models = np.empty(len(y)), []
    for k in np.unique(folds):
        test = folds == k
        models.append(make().fit(x[~test], y[~test]))
        scores[test] = models[-1].predict_proba(x[test])[:, 1]
    return scores, models


def cut_offs(scores: np.ndarray, y: np.ndarray, folds: np.ndarray) -> list[float]:
    """For each fold, the cut-off that gives precision >= TARGET on the other folds."""
    return [recall_at_precision(scores[folds != k], y[folds != k], TARGET)[1] for k in np.unique(folds)]


def summarise(name: str, scores: np.ndarray, y: np.ndarray, folds: np.ndarray) -> dict:
    pooled, _ = recall_at_precision(scores, y, TARGET)
    per_fold = [recall_at_precision(scores[folds == k], y[folds == k], TARGET)[0] for k in np.unique(folds)]
    hit_right = hits = 0
    for k, cut in enumerate(cut_offs(scores, y, folds)):
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


@dataclass(frozen=True)
class Method:
    """How a pair is scored: cosine, guarded cosine, or a classifier over one feature set."""

    name: str
    feature_set: str | None = None  # "small" / "full" for a classifier
    guarded: bool = False


def score(method: Method, models: list | None, k: int, pairs: list[tuple[str, str]],
          va: np.ndarray, vb: np.ndarray) -> np.ndarray:
    cos, small, full = features(pairs, va, vb)
    if method.feature_set is None:
        refused = np.array([guard_refuses(mismatches(a, b)) for a, b in pairs]) if method.guarded else False
        return np.where(refused, -1.0, cos)
    return models[k].predict_proba(small if method.feature_set == "small" else full)[:, 1]


def near_miss_outcomes(method: Method, models: list | None, cuts: list[float], rows: list[dict],
                       folds: np.ndarray) -> dict:
    """Refused share of each kind of near miss and served share of faithful rewrites, each fold's
    questions scored by that fold's model with that fold's cut-off."""
    counts: dict[str, list[int]] = {}
    for k in np.unique(folds):
        questions = sorted({r["a"] for r, f in zip(rows, folds) if f == k})
        made = [(kind, q, changed) for q in questions for kind, changed in near_misses(q)]
        made += [("faithful", q, faithful_rewrite(q)) for q in questions]
        vectors = embed_all([q for _, q, _ in made] + [c for _, _, c in made])
        scores = score(method, models, k, [(q, c) for _, q, c in made], vectors[: len(made)], vectors[len(made):])
        for (kind, _, _), s in zip(made, scores):
            refused_or_served = (s >= cuts[k]) if kind == "faithful" else (s < cuts[k])
            counts.setdefault(kind, [0, 0])
            counts[kind][0] += int(refused_or_served)
            counts[kind][1] += 1
    return {kind: {"share": round(ok / n, 4), "of": n} for kind, (ok, n) in sorted(counts.items())}


def mock_outcome(method: Method, models: list | None, cuts: list[float]) -> dict:
    """GPTCache's benchmark: every origin stored, every similar asked, the nearest origin checked
    by the method (each fold's model with its cut-off, votes averaged: a hit when most agree)."""
    pairs = json.loads(MOCK_PAIRS.read_text())
    vectors = embed_all([p["origin"] for p in pairs] + [p["similar"] for p in pairs])
    stored, asked = vectors[: len(pairs)], vectors[len(pairs):]
    nearest = (asked @ stored.T).argmax(axis=1)
    candidates = [(pairs[n]["origin"], p["similar"]) for n, p in zip(nearest, pairs)]
    votes = np.mean([score(method, models, k, candidates, stored[nearest], asked) >= cut
                     for k, cut in enumerate(cuts)], axis=0)
    hit, own = votes > 0.5, nearest == np.arange(len(pairs))
    return {"right": int((hit & own).sum()), "wrong": int((hit & ~own).sum()), "miss": int((~hit).sum())}


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
    pairs = [(r["a"], r["b"]) for r in rows]
    vectors = embed_all([a for a, _ in pairs] + [b for _, b in pairs])
    va, vb = vectors[: len(rows)], vectors[len(rows):]
    _, small, full = features(pairs, va, vb)
    checks = [mismatches(a, b) for a, b in pairs]
    y_refused = np.array([guard_refuses(m) for m in checks])

    def logreg():
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))

    def hgb():
        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=15, random_state=0)

    makers = {"logreg": logreg, "hgb": hgb}
    methods = [Method("cosine"), Method("guards", guarded=True)] + [
        Method(f"{kind}-{fs}", fs) for kind in makers for fs in ("small", "full")]
    results = {"pairs": len(rows), "duplicates": int(y.sum()), "fold_sizes": np.bincount(folds).tolist(),
               "guard_refuses": {"pairs": int(y_refused.sum()), "duplicates": int((y_refused & y).sum())},
               "single_guards": {}, "methods": [], "curves": {}, "near_misses": {}, "gptcache_mock": {}}
    for guard in ("numbers_differ", "negation_differs", "names_differ", "reordered"):
        refused = np.array([bool(m[guard]) for m in checks])
        gscores = np.where(refused, -1.0, (va * vb).sum(axis=1))
        results["single_guards"][guard] = {
            "refuses": int(refused.sum()), "of_them_duplicates": int((refused & y).sum()),
            "recall_at_p85_pooled": round(recall_at_precision(gscores, y, TARGET)[0], 4)}
    print(f"{'method':14s} {'R@P.85 pooled':>14s} {'per fold':>40s} {'transfer P / R':>16s}  "
          f"GPTCache mock right/wrong/miss")
    for method in methods:
        if method.feature_set is None:
            models, scores = None, score(method, None, 0, pairs, va, vb)
        else:
            x = small if method.feature_set == "small" else full
            scores, models = out_of_fold(makers[method.name.split("-")[0]], x, y, folds)
        cuts = cut_offs(scores, y, folds)
        s = summarise(method.name, scores, y, folds)
        s["cut_offs"] = [round(c, 4) for c in cuts]
        results["methods"].append(s)
        results["curves"][method.name] = curve(scores, y)
        results["near_misses"][method.name] = near_miss_outcomes(method, models, cuts, rows, folds)
        mock = results["gptcache_mock"][method.name] = mock_outcome(method, models, cuts)
        print(f"{method.name:14s} {s['recall_at_p85_pooled']:14.3f} {str(s['recall_at_p85_per_fold']):>40s} "
              f"{s['transfer_precision']:.3f} / {s['transfer_recall']:.3f}  "
              f"{mock['right']} / {mock['wrong']} / {mock['miss']}", flush=True)
    print("recall at precision >= p (pooled out-of-fold):")
    for name, c in results["curves"].items():
        print(f"  {name:14s} " + "  ".join(f"P{p}: {r:.3f}" for p, r in c.items()))
    print("near misses refused / faithful rewrites served, at each fold's P0.85 cut-off:")
    for name, outcome in results["near_misses"].items():
        print(f"  {name:14s} " + "  ".join(f"{kind} {o['share']:.3f} (n={o['of']})" for kind, o in outcome.items()))
    print("single guards (refuse when ..., else cosine):")
    for guard, g in results["single_guards"].items():
        print(f"  {guard:18s} refuses {g['refuses']} pairs ({g['of_them_duplicates']} duplicates), "
              f"recall at P0.85 {g['recall_at_p85_pooled']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
