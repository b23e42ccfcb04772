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


class WordVectors:
    """Context-free word vectors from the packaged model's own input embedding table (no extra file,
    no extra model run): a word is the mean of its word pieces' rows, unit length."""

    def __init__(self) -> None:
        import onnx
        from onnx import numpy_helper
        from tokenizers import Tokenizer

        from llmcache_sidecar.default_model import model_files

        files = model_files(None)
        inits = {i.name: i for i in onnx.load(str(files.model)).graph.initializer}
        q = numpy_helper.to_array(inits["inner.embeddings.word_embeddings.weight_q"]).astype(np.float32)
        scale = numpy_helper.to_array(inits["inner.embeddings.word_embeddings.weight_scale"]).astype(np.float32)
        self.table = q * scale
        self.tokenizer = Tokenizer.from_file(str(files.tokenizer))
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, word: str) -> np.ndarray:
        if word not in self.cache:
            ids = self.tokenizer.encode(word, add_special_tokens=False).ids or [100]
            v = self.table[ids].mean(axis=0)
            self.cache[word] = v / (np.linalg.norm(v) or 1.0)
        return self.cache[word]


SOFT = ("soft_min_stored", "soft_min_asked", "soft_wmean", "soft_low_mass", "soft_worst_idf", "soft_bag_cos")


def soft_features(stored: str, asked: str, idf: dict[str, float], unseen: float, vec: WordVectors) -> list[float]:
    """How well each content word only one side has is matched by some word of the other side."""
    ws, wa = set(_words(stored)) - STOP, set(_words(asked)) - STOP
    if not ws or not wa:
        return [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    ms, ma = np.array([vec(x) for x in sorted(ws)]), np.array([vec(x) for x in sorted(wa)])
    sim = ms @ ma.T
    best_s, best_a = dict(zip(sorted(ws), sim.max(axis=1))), dict(zip(sorted(wa), sim.max(axis=0)))
    unmatched = [(x, best_s[x]) for x in ws - wa] + [(x, best_a[x]) for x in wa - ws]
    weights = lambda words: np.array([idf.get(x, unseen) for x in words])  # noqa: E731
    bag_s, bag_a = weights(sorted(ws)) @ ms, weights(sorted(wa)) @ ma
    bag = float(bag_s @ bag_a / ((np.linalg.norm(bag_s) * np.linalg.norm(bag_a)) or 1.0))
    if not unmatched:
        return [1.0, 1.0, 1.0, 0.0, 0.0, bag]
    w = weights([x for x, _ in unmatched])
    s = np.array([b for _, b in unmatched], dtype=np.float64)
    worst = int(np.argmin(s))
    return [min((best_s[x] for x in ws - wa), default=1.0), min((best_a[x] for x in wa - ws), default=1.0),
            float(w @ s / w.sum()), float(w[s < 0.4].sum()), float(w[worst]), bag]


class TokenVectors:
    """Contextual token vectors (the model's last hidden state, special tokens dropped, unit length)
    of each text: what the sidecar's own embedding run yields before pooling."""

    def __init__(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from llmcache_sidecar.default_model import model_files

        files = model_files(None)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(files.model), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(files.tokenizer))
        self.tokenizer.enable_truncation(max_length=128)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.known: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, texts: list[str]) -> None:
        todo = sorted({t for t in texts if t not in self.known}, key=len)
        for start in range(0, len(todo), 64):
            chunk = todo[start:start + 64]
            enc = self.tokenizer.encode_batch(chunk)
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                             "token_type_ids": np.zeros_like(ids)})[0]
            for text, e, h in zip(chunk, enc, hidden):
                keep = [i for i, (t, m) in enumerate(zip(e.ids, e.attention_mask)) if m and t not in (101, 102)]
                if not keep:
                    keep = [0]
                v = h[keep]
                v = v / np.linalg.norm(v, axis=1, keepdims=True)
                self.known[text] = (np.array([e.ids[i] for i in keep]), v.astype(np.float16))

    def idf(self, questions: list[str]) -> tuple[dict[int, float], float]:
        df = Counter(t for q in questions for t in set(self.known[q][0].tolist()))
        n = len(questions)
        return {t: math.log((n + 1) / (c + 1)) + 1 for t, c in df.items()}, math.log(n + 1) + 1


LATE = ("late_mean_stored", "late_mean_asked", "late_min_stored", "late_min_asked", "late_miss_stored",
        "late_miss_asked", "late_low_mass", "late_worst_idf")


def late_features(stored: str, asked: str, tok: TokenVectors, tidf: dict[int, float], tunseen: float) -> list[float]:
    """Late interaction (ColBERT's MaxSim): how well each token of one question is matched by some
    token of the other, in context; the weakest matches weighed by token IDF."""
    (ids_s, s), (ids_a, a) = tok.known[stored], tok.known[asked]
    sim = s.astype(np.float32) @ a.astype(np.float32).T
    best_s, best_a = sim.max(axis=1), sim.max(axis=0)
    w_s = np.array([tidf.get(t, tunseen) for t in ids_s.tolist()])
    w_a = np.array([tidf.get(t, tunseen) for t in ids_a.tolist()])
    both_w, both_b = np.concatenate([w_s, w_a]), np.concatenate([best_s, best_a])
    return [float(best_s.mean()), float(best_a.mean()), float(best_s.min()), float(best_a.min()),
            float(w_s @ (1 - best_s) / w_s.sum()), float(w_a @ (1 - best_a) / w_a.sum()),
            float(both_w[both_b < 0.7].sum()), float(both_w[int(np.argmin(both_b))])]


def extra_matrix(pairs, idf, unseen, vec: WordVectors | None = None, late=None) -> np.ndarray:
    """``late``: (TokenVectors, its IDF table, unseen weight) or None."""
    rows = [extra_features(p.stored, p.asked, idf, unseen) for p in pairs]
    if vec is not None:
        rows = [r + soft_features(p.stored, p.asked, idf, unseen, vec) for r, p in zip(rows, pairs)]
    else:
        rows = [r + [0.0] * len(SOFT) for r in rows]
    if late is not None:
        rows = [r + late_features(p.stored, p.asked, *late) for r, p in zip(rows, pairs)]
    return np.array(rows, dtype=np.float64)


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
    "soft": list(SOFT),
    "late": list(LATE),
}


def columns(config: str) -> list[int]:
    """'base' or groups/feature names joined by '+' -> columns of EXTRA."""
    names = [n for part in config.split("+") if part != "base" for n in GROUPS.get(part, [part])]
    return [(EXTRA + SOFT + LATE).index(n) for n in dict.fromkeys(names)]


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
    vec = WordVectors() if "soft" in args.config else None
    tok = TokenVectors() if "late" in args.config else None
    made_for = {k: [p for _, p in rule_pairs(questions_of(fold_pairs(rows, folds, {k})), args.per_kind // 4, seed=k)]
                for k in range(5)}
    vectors.add([t for m in made_for.values() for p in m for t in (p.stored, p.asked)])
    if tok is not None:
        started = time.monotonic()
        tok.add(questions_of(fold_pairs(rows, folds, set(range(5))))
                + [t for m in made_for.values() for p in m for t in (p.stored, p.asked)])
        print(f"token vectors of {len(tok.known)} texts in {time.monotonic() - started:.0f} s", file=sys.stderr)
    late_of = lambda qs: None if tok is None else (tok, *tok.idf(qs))  # noqa: E731
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
                train_qs = questions_of(fold_pairs(rows, folds, set(train_folds)))
                idf, unseen = idf_table(train_qs)
                xtr, ytr = features_of(train, vectors.known)
                xte, yte = features_of(test, vectors.known)
                if args.cross_idf:  # a training fold's pairs weighed by the other training folds' questions
                    parts = []
                    for f in train_folds:
                        others = set(train_folds) - {f}
                        other_qs = questions_of(fold_pairs(rows, folds, others))
                        fidf, funseen = idf_table(other_qs)
                        parts.append((f, extra_matrix(fold_pairs(rows, folds, {f}), fidf, funseen, vec, late_of(other_qs)),
                                      extra_matrix(made_for[f], fidf, funseen, vec, late_of(other_qs))))
                    etr = np.vstack([e for _, e, _ in parts] + [m for _, _, m in parts])
                else:
                    etr = extra_matrix(train, idf, unseen, vec, late_of(train_qs))
                cache[k] = (xtr, ytr, xte, yte, etr, extra_matrix(test, idf, unseen, vec, late_of(train_qs)))
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
