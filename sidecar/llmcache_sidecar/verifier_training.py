"""Training the match verifier (offline: ``scripts/train_verifier.py`` and ``llmcache tune``).

Needs scikit-learn (the ``tune`` extra); the sidecar itself never imports this module.  The
pieces: a split of labelled pairs by question text (no question on both sides of a split), extra
labelled negatives made by rules from the training questions (another number, date, negation,
name, a reversed relation: the edits a cosine threshold serves and QQP barely contains) and
extra duplicates (rewordings, two words swapped across "and" / "or"), the
two model kinds, their export to the JSON the sidecar reads (:mod:`llmcache_sidecar.verifier`),
and the precision -> cut tables measured on held-out scores.

The augmentation rules here are deliberately not the ones ``scripts/near_misses.py`` uses to
*measure* near misses (other replacement values, other word lists, insertion of "not" rather
than a contracted auxiliary, names taken from other training questions rather than a fixed
list), so the measured refusal rates are not a replay of the training data.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .verifier import (
    ALL_PAIR_FEATURES,
    FORMAT,
    NEGATIONS,
    PAIR_FEATURES,
    STOP,
    SYMMETRIC,
    WordWeights,
    feature_matrix,
    pair_feature_names,
)

#: the precisions the shipped table covers
PRECISIONS = tuple(round(0.70 + 0.01 * i, 2) for i in range(30))


@dataclass(frozen=True, slots=True)
class Pair:
    stored: str
    asked: str
    duplicate: bool


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def question_groups(pairs: Sequence[tuple[str, str]], k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold (0..k-1) of each pair; pairs connected through a shared question share a fold
    (union-find over the questions, compared lower-cased and whitespace-collapsed)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(_norm(a)), find(_norm(b))
        if ra != rb:
            parent[ra] = rb
    roots = sorted({find(_norm(a)) for a, _ in pairs})
    random.Random(seed).shuffle(roots)
    fold_of_root = {root: i % k for i, root in enumerate(roots)}
    return np.array([fold_of_root[find(_norm(a))] for a, _ in pairs])


# -- rule-made training pairs -------------------------------------------------------------

_NUMBER = re.compile(r"\b\d+\b")
_MONTH_LIST = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December"]
_MONTH = re.compile(r"\b(" + "|".join(_MONTH_LIST) + r")\b")
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_DAY = re.compile(r"\b(" + "|".join(_DAYS) + r")\b")
_AUX = re.compile(r"\b(is|are|was|were|should|could|would|has|have|must|might|did|does|do|can|will)\b", re.I)
_NEGATED = re.compile(r"\b(not|never|n't)\b ?", re.I)
_NAME = re.compile(r"\b[A-Z][a-z]{2,}\b")
#: "and" / "or" between two single words that stand alone: after a small word or a clause's
#: start, before a small word or punctuation ("my emotions and actions?", not "stock market and
#: mutual funds", whose swap would be a scramble)
_CONJUNCTS = re.compile(r"(?:^|[,:;(]\s*|\b(?P<before>[A-Za-z]+) )(?P<left>[A-Za-z]+) (?P<word>and|or) "
                        r"(?P<right>[A-Za-z]+)(?=\s*[?.!,;:)]|\s*$| (?P<after>[A-Za-z]+)\b)")
_SMALL = STOP | {"between", "both", "either", "my", "your", "his", "her", "their", "our", "its", "about", "from",
                 "at", "by", "like", "whether", "than", "that", "this", "these", "those", "as", "into", "over"}
#: kinds of rule-made pairs labelled duplicate (every other kind is a near miss)
DUPLICATE_KINDS = frozenset({"faithful", "conjuncts"})


def _numbers(q: str, rng: random.Random) -> str | None:
    m = _NUMBER.search(q)
    if not m:
        return None
    value = int(m.group()) if len(m.group()) < 10 else 7
    other = value * 2 + rng.choice([3, 5, 10]) if value < 1900 or value > 2100 else value - rng.choice([2, 3, 10])
    return q[:m.start()] + str(other) + q[m.end():]


def _dates(q: str, rng: random.Random) -> str | None:
    if m := _MONTH.search(q):
        return q[:m.start()] + _MONTH_LIST[(_MONTH_LIST.index(m.group()) + rng.randint(1, 11)) % 12] + q[m.end():]
    if m := _DAY.search(q):
        return q[:m.start()] + _DAYS[(_DAYS.index(m.group()) + rng.randint(1, 6)) % 7] + q[m.end():]
    return None


def _negation(q: str, rng: random.Random) -> str | None:
    if m := _NEGATED.search(q):  # take an existing negation away
        return (q[:m.start()] + q[m.end():]).replace("  ", " ")
    if m := _AUX.search(q):
        return q[:m.end()] + rng.choice([" not", " never"]) + q[m.end():]
    return None


def _relation_swapper(names: frozenset[str]) -> Callable[[str, random.Random], str | None]:
    """Two names of the question swapped ("from India to Canada" -> "from Canada to India"),
    never across "and" / "or" ("India and Canada" is "Canada and India")."""
    def across(between: str) -> bool:
        words = between.lower().split()
        return len(words) > 0 and not SYMMETRIC.intersection(words)

    def swap(q: str, rng: random.Random) -> str | None:
        found = [m for m in _NAME.finditer(q) if m.start() > 0 and m.group() in names]
        first = found[0] if found else None
        second = next((m for m in found[1:] if m.group() != found[0].group() and across(q[found[0].end():m.start()])),
                      None)
        if first is None or second is None:
            return None
        return (q[:first.start()] + second.group() + q[first.end():second.start()] + first.group()
                + q[second.end():])
    return swap


def _name_swapper(names: Sequence[str]) -> Callable[[str, random.Random], str | None]:
    known = frozenset(names)

    def swap(q: str, rng: random.Random) -> str | None:
        found = [m for m in _NAME.finditer(q) if m.start() > 0 and m.group() in known]
        if not found or not names:
            return None
        m = rng.choice(found)
        other = rng.choice(names)
        if other.lower() == m.group().lower():
            return None
        return q[:m.start()] + other + q[m.end():]
    return swap


def _conjuncts(q: str, rng: random.Random) -> str | None:
    """The two words around the first "and" / "or" swapped ("shame and guilt" -> "guilt and
    shame"): the same question, though every word moved."""
    for m in _CONJUNCTS.finditer(q):
        left, right = m["left"], m["right"]
        if (left.lower() != right.lower() and not {left.lower(), right.lower()} & (STOP | NEGATIONS)
                and (m["before"] is None or m["before"].lower() in _SMALL)
                and (m["after"] is None or m["after"].lower() in _SMALL)):
            return q[:m.start("left")] + f"{right} {m['word']} {left}" + q[m.end("right"):]
    return None


def _faithful(q: str, rng: random.Random) -> str | None:
    """A rewording that keeps the meaning (punctuation, case, filler)."""
    choice = rng.randrange(4)
    if choice == 0:
        return q.rstrip("?. ") if q.rstrip().endswith(("?", ".")) else q + "?"
    if choice == 1:
        return q.upper() if len(q) < 40 else q.lower()
    if choice == 2:
        return "Please, " + q[:1].lower() + q[1:]
    return re.sub(r"\s+", "  ", q) + " ?"


def rule_pairs(questions: Sequence[str], per_kind: int, seed: int = 0) -> list[tuple[str, Pair]]:
    """(kind, pair) made by rules from ``questions``: near misses (labelled non-duplicate) and
    faithful rewordings (labelled duplicate), at most ``per_kind`` of each kind."""
    rng = random.Random(seed)
    openers = {q.split()[0] for q in questions if q.split()} | {m.group() for q in questions for m in
                                                                 re.finditer(r"(?<=[.?!] )[A-Z][a-z]+", q)}
    names = sorted({m.group() for q in questions for m in _NAME.finditer(q) if m.start() > 0} - openers)
    makers: dict[str, Callable[[str, random.Random], str | None]] = {
        "number": _numbers, "date": _dates, "negation": _negation, "relation": _relation_swapper(frozenset(names)),
        "name": _name_swapper(names), "faithful": _faithful, "conjuncts": _conjuncts}
    shuffled = list(questions)
    rng.shuffle(shuffled)
    made: list[tuple[str, Pair]] = []
    for kind, make in makers.items():
        count = 0
        for q in shuffled:
            changed = make(q, rng)
            if changed is None or changed == q:
                continue
            made.append((kind, Pair(q, changed, kind in DUPLICATE_KINDS)))
            count += 1
            if count >= per_kind:
                break
    return made


# -- models, export, tables -----------------------------------------------------------------

@dataclass(slots=True)
class TreeEnsemble:
    """Two kinds of gradient-boosted trees, averaged half and half in raw score:

    - the first layout's model (15 leaves, lr 0.1) over the first pair features and the
      embedding columns;
    - trees over the first ``columns`` features (all pair features, lexical and word-weighted
      ones included), fitted ``models`` times with other random states (each a different
      early-stopping split) and averaged: one such model's recall at precision 0.85 moved by
      several points with the seed.

    Each alone reached 0.483 / 0.489 recall at precision 0.85 (5-fold CV); their average 0.549,
    every fold up (docs/benchmarks.md, issue 9).  Exported as one tree list (:func:`export_model`)."""

    columns: int
    models: int = 5
    #: (fitted model, the columns of x it reads, its weight in the raw score)
    fitted: list[tuple[Any, np.ndarray, float]] = field(default_factory=list)

    def fit(self, x: np.ndarray, y: np.ndarray) -> TreeEnsemble:
        from sklearn.ensemble import HistGradientBoostingClassifier

        first = np.r_[np.arange(len(PAIR_FEATURES)), np.arange(self.columns, x.shape[1])]
        pairs = np.arange(self.columns)
        self.fitted = [(HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=15,
                                                       random_state=0).fit(x[:, first], y), first, 0.5)]
        self.fitted += [(HistGradientBoostingClassifier(max_iter=400, learning_rate=0.05, max_leaf_nodes=31,
                                                        random_state=seed).fit(x[:, pairs], y),
                         pairs, 0.5 / self.models) for seed in range(self.models)]
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        raw = sum(weight * model.decision_function(x[:, columns]) for model, columns, weight in self.fitted)
        p = 1.0 / (1.0 + np.exp(-raw))
        return np.column_stack([1.0 - p, p])


def make_model(kind: str, pair_columns: int | None = None) -> Any:
    """A model of ``kind``: trees as a :class:`TreeEnsemble` when the matrix has ``pair_columns``
    pair features (lexical and word-weighted ones), else one model over all columns (the first
    layout's).  Linear models read every feature."""
    if kind == "trees":
        from sklearn.ensemble import HistGradientBoostingClassifier

        if pair_columns is not None:
            return TreeEnsemble(pair_columns)
        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=15, random_state=0)
    if kind == "linear":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    raise ValueError(f"unknown verifier kind {kind!r} (trees or linear)")


def export_model(kind: str, fitted: Any) -> dict[str, Any]:
    """The fitted scikit-learn model as the JSON the sidecar's numpy inference reads."""
    if kind == "linear":
        scaler, logreg = fitted[0], fitted[-1]
        return {"kind": "linear", "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
                "weights": logreg.coef_[0].tolist(), "bias": float(logreg.intercept_[0])}
    members = fitted.fitted if isinstance(fitted, TreeEnsemble) else [(fitted, None, 1.0)]
    # an ensemble's raw score is the weighted sum of its members': all their trees, each leaf value
    # times its member's weight, each split feature mapped to a column of the whole feature matrix
    predictors = [(tree[0].nodes, columns, weight) for member, columns, weight in members
                  for tree in member._predictors]
    width = max(len(nodes) for nodes, _, _ in predictors)

    def padded(name: str, fill: float, dtype: type) -> list[list[Any]]:
        out = np.full((len(predictors), width), fill, dtype=dtype)
        for t, (nodes, columns, weight) in enumerate(predictors):
            values = nodes[name]
            if name == "value":
                values = values * weight
            elif name == "feature_idx" and columns is not None:
                values = columns[values]
            out[t, : len(nodes)] = values
        return out.tolist()

    if any(nodes["is_categorical"].any() for nodes, _, _ in predictors):
        raise ValueError("categorical splits are not exported")
    return {"kind": "trees", "baseline": float(sum(w * np.ravel(m._baseline_prediction)[0] for m, _, w in members)),
            "depth": int(max(nodes["depth"].max() for nodes, _, _ in predictors)) + 1,
            "feature": padded("feature_idx", 0, np.int64), "threshold": padded("num_threshold", 0.0, np.float64),
            "left": padded("left", 0, np.int64), "right": padded("right", 0, np.int64),
            "is_leaf": padded("is_leaf", 1, np.int64), "value": padded("value", 0.0, np.float64)}


def precision_table(scores: np.ndarray, duplicate: np.ndarray,
                    precisions: Sequence[float] = PRECISIONS) -> list[list[float]]:
    """[precision, lowest cut reaching it (score >= cut), recall there] for each precision
    that some cut reaches, measured on held-out scores."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], duplicate[order].astype(bool)
    tp = np.cumsum(y)
    hits = np.arange(1, len(y) + 1)
    last_of_run = np.r_[s[1:] != s[:-1], True]
    recall = tp / max(int(y.sum()), 1)
    table = []
    for target in precisions:
        ok = (tp / hits >= target) & last_of_run
        if ok.any():
            i = int(np.flatnonzero(ok)[np.argmax(recall[ok])])
            table.append([float(target), float(s[i]), round(float(recall[i]), 4)])
    return table


def verifier_document(kind: str, fitted: Any, dim: int, cuts: list[list[float]], cosine_cuts: list[list[float]],
                      embedding_sha256: str, provenance: dict[str, Any],
                      weights: WordWeights | None = None) -> dict[str, Any]:
    """The verifier file of a model fitted on :func:`features_of` with the same ``weights``."""
    names = list(pair_feature_names(weights))
    table = {} if weights is None else {"word_weights": {"unseen": weights.unseen, "idf": weights.idf}}
    return {"format": FORMAT, "dim": dim, "features": names + ["|u-v|"] * dim + ["u*v"] * dim, **table,
            "embedding_sha256": embedding_sha256, "cuts": cuts, "cosine_cuts": cosine_cuts,
            "provenance": provenance, "model": export_model(kind, fitted)}


def features_of(pairs: Sequence[Pair], vectors: dict[str, np.ndarray],
                weights: WordWeights | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix and labels of ``pairs``; ``vectors`` maps every text to its embedding."""
    u = np.stack([vectors[p.stored] for p in pairs])
    v = np.stack([vectors[p.asked] for p in pairs])
    x = feature_matrix([p.stored for p in pairs], [p.asked for p in pairs], u, v, weights)
    return x, np.array([p.duplicate for p in pairs])


def texts_of(pairs: Sequence[Pair]) -> Iterator[str]:
    for p in pairs:
        yield p.stored
        yield p.asked


def cross_fitted_features(groups: Sequence[tuple[Sequence[Pair], Sequence[Pair]]], vectors: dict[str, np.ndarray]
                          ) -> tuple[np.ndarray, np.ndarray, WordWeights]:
    """Training features with word weights, and the weights to ship with the model.

    ``groups``: (labelled pairs, rule-made pairs) per group of questions (no question in two
    groups).  A group's pairs are weighed by the *other* groups' questions: weighed by a table
    that holds their own questions, training words would never be unseen while asked questions'
    words often are, and the model would learn a shift it never meets (measured: recall at
    precision 0.85 fell).  The shipped weights: every group's labelled questions."""
    xs, ys = [], []
    for i, (labelled, made) in enumerate(groups):
        others = [q for j, (other, _) in enumerate(groups) if j != i for q in sorted(set(texts_of(other)))]
        x, y = features_of([*labelled, *made], vectors, WordWeights.of(others))
        xs.append(x)
        ys.append(y)
    everything = [q for labelled, _ in groups for q in sorted(set(texts_of(labelled)))]
    return np.vstack(xs), np.concatenate(ys), WordWeights.of(everything)


def fit_verifier(kind: str, groups: Sequence[tuple[Sequence[Pair], Sequence[Pair]]], vectors: dict[str, np.ndarray],
                 lexical: bool = True) -> tuple[Any, WordWeights | None]:
    """The model of ``kind`` fitted on ``groups`` ((labelled, rule-made) pairs per group of
    questions, no question in two groups) and the word weights to ship with it.

    ``lexical`` (the shipped layout): every pair feature, word weights cross-fitted over the
    groups, trees as a :class:`TreeEnsemble`; else the first layout (the first pair features and
    the embedding columns, one model, no word weights)."""
    if lexical:
        x, y, weights = cross_fitted_features(groups, vectors)
        return make_model(kind, len(ALL_PAIR_FEATURES)).fit(x, y), weights
    x, y = features_of([p for labelled, made in groups for p in (*labelled, *made)], vectors)
    return make_model(kind).fit(x, y), None
