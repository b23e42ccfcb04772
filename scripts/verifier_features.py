"""Screen candidate verifier features and training choices by question-split CV (issue 9).

The screening harness behind the feature table of docs/benchmarks.md (issue 9): candidate pair
features computed here (``EXTRA``; the winners moved into ``llmcache_sidecar.verifier``), added
to the shipped feature matrix, scikit-learn trees trained per held-out fold of ``qqp_folds.py``
with the same rule-made pairs as ``train_verifier.py``; prints recall at precision 0.85 pooled
over the held-out folds and per fold.  No export, no near-miss or GPTCache measures: the
candidate that wins here is then measured in full by ``train_verifier.py``.

    OMP_NUM_THREADS=1 nice -n 19 python scripts/verifier_features.py [--folds 0,1,2,3,4]
        [--config base,lex,misc+charcheap,...] [--pairs-only] [--cross-idf] [--seeds N]
        [--first-seed 0] [--params '{"max_leaf_nodes": 31}'] [--per-kind 600] [--dup-weight 1.0]

``--cross-idf``: each training fold's pairs weighed by IDF over the *other* training folds'
questions (the held-out fold by all training folds'), so unseen words occur in training as
they do at lookup.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import load_rows, question_folds, recall_at_precision  # noqa: E402
from train_verifier import Vectors, fold_pairs, questions_of  # noqa: E402

from llmcache_sidecar.verifier import STOP, _words  # noqa: E402
from llmcache_sidecar.verifier_training import features_of, rule_pairs  # noqa: E402

QWORDS = ("what", "how", "why", "which", "who", "when", "where", "is", "can", "does", "do", "are", "should",
          "will", "would", "could", "did", "was", "has", "have")


def idf_table(questions: list[str]) -> tuple[dict[str, float], float]:
    df = Counter(w for q in questions for w in set(_words(q)))
    n = len(questions)
    return {w: math.log((n + 1) / (c + 1)) + 1 for w, c in df.items()}, math.log(n + 1) + 1


def grams(text: str, k: int) -> set[str]:
    t = " ".join(_words(text))
    return {t[i:i + k] for i in range(max(len(t) - k + 1, 1))}


def qword(words: list[str]) -> int:
    for w in words[:3]:
        if w in QWORDS:
            return QWORDS.index(w) + 1
    return 0


def stem(w: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(w) > len(suffix) + 2 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w


EXTRA = ("idf_jaccard", "idf_only_stored", "idf_only_asked", "idf_only_max", "idf_only_share", "char3", "char4",
         "token_ratio", "char_ratio", "len_diff", "words_diff", "only_stored", "only_asked", "qword_same",
         "qword_s", "qword_a", "first2_same", "stem_jaccard", "idf_only_content_max", "last_word_same")


def extra_features(stored: str, asked: str, idf: dict[str, float], unseen: float) -> list[float]:
    ws, wa = _words(stored), _words(asked)
    ss, sa = set(ws), set(wa)
    both, only_s, only_a = ss & sa, ss - sa, sa - ss
    w = lambda words: sum(idf.get(x, unseen) for x in words)  # noqa: E731
    union = w(ss | sa) or 1.0
    g3s, g3a, g4s, g4a = grams(stored, 3), grams(asked, 3), grams(stored, 4), grams(asked, 4)
    stems_s, stems_a = {stem(x) for x in ss}, {stem(x) for x in sa}
    only = only_s | only_a
    content_only = only - STOP
    qs, qa = qword(ws), qword(wa)
    return [
        w(both) / union, w(only_s), w(only_a), max((idf.get(x, unseen) for x in only), default=0.0),
        w(only) / union,
        len(g3s & g3a) / max(len(g3s | g3a), 1), len(g4s & g4a) / max(len(g4s | g4a), 1),
        difflib.SequenceMatcher(None, ws, wa, autojunk=False).ratio(),
        difflib.SequenceMatcher(None, " ".join(ws), " ".join(wa), autojunk=False).ratio(),
        float(abs(len(stored) - len(asked))), float(abs(len(ws) - len(wa))), float(len(only_s)), float(len(only_a)),
        float(qs == qa), float(qs), float(qa), float(ws[:2] == wa[:2]),
        len(stems_s & stems_a) / max(len(stems_s | stems_a), 1),
        max((idf.get(x, unseen) for x in content_only), default=0.0),
        float(ws[-1:] == wa[-1:]),
    ]


def extra_matrix(pairs, idf, unseen) -> np.ndarray:
    return np.array([extra_features(p.stored, p.asked, idf, unseen) for p in pairs], dtype=np.float64)


def model(params: dict):
    from sklearn.ensemble import HistGradientBoostingClassifier

    base = dict(max_iter=200, learning_rate=0.1, max_leaf_nodes=15, random_state=0)
    base.update(params)
    return HistGradientBoostingClassifier(**base)


GROUPS = {
    "idf": ["idf_jaccard", "idf_only_stored", "idf_only_asked", "idf_only_max", "idf_only_share", "idf_only_content_max"],
    "char": ["char3", "char4", "token_ratio", "char_ratio"],
    "charcheap": ["char3", "char4", "token_ratio"],
    "misc": ["len_diff", "words_diff", "only_stored", "only_asked", "qword_same", "qword_s", "qword_a", "first2_same",
             "stem_jaccard", "last_word_same"],
    "lex": list(EXTRA),
}


def columns(config: str) -> list[int]:
    """'base' or groups/feature names joined by '+' -> columns of EXTRA."""
    names = [n for part in config.split("+") if part != "base" for n in GROUPS.get(part, [part])]
    return [EXTRA.index(n) for n in dict.fromkeys(names)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--config", default="base,lex")
    parser.add_argument("--per-kind", type=int, default=600)
    parser.add_argument("--dup-weight", type=float, default=1.0)
    parser.add_argument("--params", default="{}", help="HistGradientBoostingClassifier parameters (JSON)")
    parser.add_argument("--seeds", type=int, default=1, help="random states averaged (early-stopping split)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--cross-idf", action="store_true", help="training pairs' IDF from the other training folds")
    parser.add_argument("--pairs-only", action="store_true", help="leave the |u-v|, u*v columns out")
    args = parser.parse_args()
    rows = load_rows()
    folds = question_folds(rows)
    vectors = Vectors(None)
    made_for = {k: [p for _, p in rule_pairs(questions_of(fold_pairs(rows, folds, {k})), args.per_kind // 4, seed=k)]
                for k in range(5)}
    vectors.add([t for m in made_for.values() for p in m for t in (p.stored, p.asked)])
    held_out = [int(k) for k in args.folds.split(",")]
    cache: dict = {}
    for name in args.config.split(","):
        params = json.loads(args.params)
        cols = columns(name)
        scores, labels, per_fold = [], [], []
        started = time.monotonic()
        for k in held_out:
            train_folds = sorted(set(range(5)) - {k})
            train = ([p for f in train_folds for p in fold_pairs(rows, folds, {f})]
                     + [p for f in train_folds for p in made_for[f]])
            test = fold_pairs(rows, folds, {k})
            if k not in cache:
                idf, unseen = idf_table(questions_of(fold_pairs(rows, folds, set(train_folds))))
                xtr, ytr = features_of(train, vectors.known)
                xte, yte = features_of(test, vectors.known)
                if args.cross_idf:  # a training fold's pairs weighed by the other training folds' questions
                    parts = []
                    for f in train_folds:
                        others = set(train_folds) - {f}
                        fidf, funseen = idf_table(questions_of(fold_pairs(rows, folds, others)))
                        parts.append((f, extra_matrix(fold_pairs(rows, folds, {f}), fidf, funseen),
                                      extra_matrix(made_for[f], fidf, funseen)))
                    etr = np.vstack([e for _, e, _ in parts] + [m for _, _, m in parts])
                else:
                    etr = extra_matrix(train, idf, unseen)
                cache[k] = (xtr, ytr, xte, yte, etr, extra_matrix(test, idf, unseen))
            xtr, ytr, xte, yte, etr, ete = cache[k]
            if args.pairs_only:
                xtr, xte = xtr[:, :11], xte[:, :11]
            if cols:
                xtr, xte = np.hstack([xtr, etr[:, cols]]), np.hstack([xte, ete[:, cols]])
            weight = np.where(ytr, args.dup_weight, 1.0)
            s = np.zeros(len(yte))
            for seed in range(args.seeds):
                fitted = model({**params, "random_state": args.first_seed + seed}).fit(xtr, ytr, sample_weight=weight)
                s += fitted.predict_proba(xte)[:, 1] / args.seeds
            per_fold.append(round(recall_at_precision(s, yte, 0.85)[0], 4))
            scores.append(s)
            labels.append(yte)
        pooled = recall_at_precision(np.concatenate(scores), np.concatenate(labels), 0.85)[0]
        print(json.dumps({"config": name, "params": params, "pairs_only": args.pairs_only, "per_kind": args.per_kind,
                          "dup_weight": args.dup_weight, "iterations": fitted.n_iter_,
                          "pooled": round(pooled, 4), "per_fold": per_fold,
                          "seconds": round(time.monotonic() - started)}), flush=True)


if __name__ == "__main__":
    main()
