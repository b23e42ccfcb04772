"""Agreement guards (measured, not shipped): serve a semantic hit only when a second retriever
picks the same stored question as the embedding's nearest.

Issue 9, docs/benchmarks.md ("Agreement guards on GPTCache's benchmark").  Second retrievers:
the opt-in mpnet model's nearest (``--mpnet DIR``, what ``llmcache model mpnet`` builds), the same
unless mpnet's pick is within mpnet cosine ``TAU`` of ours, and a TF-IDF character 3-5-gram
nearest.  The verifier decides as shipped (the packaged MiniLM + ``--verifier``, the cut of each
target precision).

- GPTCache's mock: every origin stored, every similar asked; right / wrong by row id.
- QQP dev: each held-out fold's questions are the store; a pair (a, b) is served when its
  out-of-fold verifier score (``--scores``, from ``train_verifier.py --scores``) reaches the cut
  and the second retriever's nearest question to b (over the store without b) is a.

    OMP_NUM_THREADS=1 python scripts/agreement_guards.py --mpnet DIR --scores SCORES.npz [--verifier FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import MOCK_PAIRS, load_rows, question_folds, recall_at_precision  # noqa: E402
from train_verifier import SHIPPED, Vectors  # noqa: E402

from llmcache_sidecar.verifier import load_verifier  # noqa: E402

TARGETS = (0.70, 0.75, 0.85)
TAU = 0.90

#: (store texts, asked texts) -> for each asked text, the index of its nearest stored text; on
#: QQP the asked question is itself in the store and never counts as its own nearest
Nearest = Callable[[list[str], list[str]], np.ndarray]
Guard = Callable[[list[str], list[str], np.ndarray], np.ndarray]


def without_itself(sims: np.ndarray, store: list[str], asked: list[str]) -> np.ndarray:
    sims[np.array(asked)[:, None] == np.array(store)[None, :]] = -9.0
    return sims


def embedding_nearest(vectors: Vectors) -> Nearest:
    def nearest(store: list[str], asked: list[str]) -> np.ndarray:
        vectors.add(store + asked)
        s = np.stack([vectors.known[t] for t in store])
        a = np.stack([vectors.known[t] for t in asked])
        return without_itself(a @ s.T, store, asked).argmax(axis=1)
    return nearest


def tfidf_nearest(store: list[str], asked: list[str]) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit(store)
    return without_itself((tfidf.transform(asked) @ tfidf.transform(store).T).toarray(), store, asked).argmax(axis=1)


def guards(mpnet: Vectors) -> dict[str, Guard]:
    """name -> (store, asked, our pick per asked) -> whether the guard lets the pick through."""
    by_mpnet = embedding_nearest(mpnet)

    def near_mpnet(store: list[str], asked: list[str], ours: np.ndarray) -> np.ndarray:
        theirs = by_mpnet(store, asked)
        s = np.stack([mpnet.known[t] for t in store])
        return (theirs == ours) | ((s[theirs] * s[ours]).sum(axis=1) >= TAU)

    return {"none": lambda store, asked, ours: np.ones(len(asked), dtype=bool),
            "mpnet agrees": lambda store, asked, ours: by_mpnet(store, asked) == ours,
            "TF-IDF agrees": lambda store, asked, ours: tfidf_nearest(store, asked) == ours,
            f"mpnet agrees or picks within {TAU}": near_mpnet}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpnet", required=True, help="the directory llmcache model mpnet built")
    parser.add_argument("--scores", type=Path, required=True, help="out-of-fold scores (train_verifier.py --scores)")
    parser.add_argument("--verifier", type=Path, default=SHIPPED)
    args = parser.parse_args()
    verifier = load_verifier(args.verifier)
    mini, mpnet = Vectors(None), Vectors(args.mpnet)
    checks = guards(mpnet)

    rows = json.loads(MOCK_PAIRS.read_text())
    origins, similars = [r["origin"] for r in rows], [r["similar"] for r in rows]
    ours = embedding_nearest(mini)(origins, similars)
    u = np.stack([mini.known[origins[j]] for j in ours])
    v = np.stack([mini.known[t] for t in similars])
    p = verifier.probability([origins[j] for j in ours], similars, u, v)
    own = ours == np.arange(len(rows))
    print("GPTCache mock, right / wrong (share of hits wrong) at target", TARGETS)
    for name, check in checks.items():
        passed = check(origins, similars, ours)
        cells = []
        for target in TARGETS:
            hit = passed & (p >= verifier.cut_for(target))
            right, wrong = int((hit & own).sum()), int((hit & ~own).sum())
            cells.append(f"{right} / {wrong} ({wrong / max(right + wrong, 1):.1%})")
        print(f"  {name:36s}", "   ".join(cells), flush=True)

    dev = load_rows()
    folds = question_folds(dev)
    saved = np.load(args.scores)
    assert (saved["folds"] == folds).all(), "the scores were made on other folds"
    scores, labels = saved["trees"], saved["labels"].astype(bool)
    print("QQP dev, recall at precision 0.85 (out-of-fold scores, a guard refusing = no hit)")
    for name, check in checks.items():
        passed = np.zeros(len(dev), dtype=bool)
        for f in range(5):
            idx = np.flatnonzero(folds == f)
            store = sorted({t for i in idx for t in (dev[i]["a"], dev[i]["b"])})
            at = {t: j for j, t in enumerate(store)}
            passed[idx] = check(store, [dev[i]["b"] for i in idx], np.array([at[dev[i]["a"]] for i in idx]))
        print(f"  {name:36s} {recall_at_precision(np.where(passed, scores, -1.0), labels)[0]:.3f}", flush=True)


if __name__ == "__main__":
    main()
