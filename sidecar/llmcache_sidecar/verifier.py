"""The match verifier: is a stored question close enough in *meaning* to serve its answer?

A cosine threshold cannot tell "How do I convert Celsius to Fahrenheit?" from "How do I convert
Fahrenheit to Celsius?".  The verifier scores a candidate pair (stored question, asked question)
from their two embeddings and their texts:

- the cosine, and the elementwise ``|u - v|`` and ``u * v`` of the two unit vectors;
- lexical overlap: word and content-word Jaccard, words on one side only, length ratio, whether
  the first word (the question type) differs;
- guard signals: the numbers differ, a date (month, weekday, year) differs, a negation is on one
  side only, the capitalised names differ, a relation is reversed (two parts of the question
  swapped across words that are not "and", "or", "vs": "ethane to ethene" / "ethene to ethane",
  but not "shame and guilt" / "guilt and shame"; files from before 2026-12-06 name the older
  ``reordered``: the same words in any other order);
- in files that name them (:data:`LEXICAL_FEATURES`): length differences, words on each side
  only, the question words and the first two / last words compared, stem overlap, character
  3- and 4-gram overlap, the matching share of the two word sequences; and, weighing each word
  by its inverse document frequency over the training questions (the table is in the file), the
  weighted overlap and the weight of the words on one side only (the "unmatched important word").

Words are compared as :func:`_words` spells them, one way for the ways people type the same
question (apostrophes, number words, British endings).

A file lists the features it was trained on; files from before the lexical features keep the
first layout, and files from before 2026-12-06 (naming ``reordered``) the older word split.

The model is a logistic regression or gradient-boosted trees trained offline
(``scripts/train_verifier.py``, ``llmcache tune``) and shipped as a JSON file: weights or node
arrays, the precision -> probability-cut table measured on held-out pairs, and the provenance.
Inference is numpy only (no scikit-learn, no torch) and scores the top-k candidates of a lookup
in one call; a hit is the best-scoring candidate whose probability reaches the cut the user's
target precision picks.  A file written by ``llmcache tune --crossencoder`` also names a second
opinion (:mod:`.crossencoder`) asked about the candidates the verifier rates likely.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import DEFAULT_TARGET_PRECISION, Settings
from .crossencoder import SECTION, CrossEncoderError, SecondOpinion, load_second_opinion

log = logging.getLogger(__name__)

FORMAT = "llmcache-verifier/1"
VERIFIER_FILE = "verifier.json"

WORD = re.compile(r"[a-z0-9']+")
PLAIN_WORD = re.compile(r"[a-z0-9]+")
APOSTROPHE = re.compile(r"['’]")
#: negations contracted with their apostrophe dropped (as typed, or by :func:`_words`)
CONTRACTED_NEGATIONS = {
    **{aux + "nt": (aux, "not") for aux in ("do", "does", "did", "is", "are", "was", "were", "could", "should",
                                            "would", "have", "has", "had", "must", "need", "might")},
    "cant": ("can", "not"), "wont": ("will", "not"), "aint": ("is", "not"), "shant": ("shall", "not")}
#: number words read as their digits ("nine" = "9"); not "one", which is mostly a pronoun ("which one")
NUMBER_WORDS = {word: str(value) for value, word in enumerate(
    "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split()) if word != "_"} | {
    word: str(10 * tens) for tens, word in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)}
#: British endings and their American spelling, longest first ("colour" = "color", "organise" =
#: "organize", "centre" = "center", "defence" = "defense", "travelled" = "traveled",
#: "programme" = "program", "catalogue" = "catalog"); only for words longer than the ending + 2
#: letters ("four", "rise", "fence" stay).  Both sides are spelt alike, so a word that only
#: looks British ("otherwise") changes on both sides and still matches itself.
SPELLINGS = (("isations", "izations"), ("isation", "ization"), ("ourites", "orites"), ("ourite", "orite"),
             ("ouring", "oring"), ("ellers", "elers"), ("elling", "eling"), ("ogues", "ogs"), ("oured", "ored"),
             ("elled", "eled"), ("ences", "enses"), ("ising", "izing"), ("ysing", "yzing"), ("eller", "eler"),
             ("ours", "ors"), ("ogue", "og"), ("ence", "ense"), ("ised", "ized"), ("ises", "izes"), ("ysed", "yzed"),
             ("tres", "ters"), ("mmes", "ms"), ("our", "or"), ("ise", "ize"), ("yse", "yze"), ("tre", "ter"),
             ("mme", "m"))
#: the last three letters of every ending above: most words are let through on one set lookup
SPELLING_TAILS = frozenset(british[-3:] for british, _ in SPELLINGS)
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
CAPITALISED = re.compile(r"\b[A-Z][A-Za-z0-9]*\b")
NEGATIONS = frozenset({"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot"})
MONTHS = frozenset({"january", "february", "march", "april", "may", "june", "july", "august", "september",
                    "october", "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
                    "sept", "oct", "nov", "dec"})
WEEKDAYS = frozenset({"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"})
STOP = frozenset({"a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "is", "are", "do", "does", "i",
                  "you", "my", "what", "how", "why", "which", "who", "when", "where", "can", "it", "be", "with"})

QUESTION_WORDS = ("what", "how", "why", "which", "who", "when", "where", "is", "can", "does", "do", "are", "should",
                  "will", "would", "could", "did", "was", "has", "have")
SUFFIXES = ("ing", "ed", "es", "s")

#: names of the first pair features, in the order of :func:`pair_features` (the embedding features follow)
PAIR_FEATURES = ("cosine", "jaccard", "content_jaccard", "only_one_side", "length_ratio", "first_word_differs",
                 "numbers_differ", "dates_differ", "negation_differs", "names_differ", "relation_reversed")
#: the same in files written before ``relation_reversed``: its place holds ``reordered``
LEGACY_PAIR_FEATURES = PAIR_FEATURES[:-1] + ("reordered",)
#: lexical features after them (issue 9, measured in docs/benchmarks.md; not in the packaged file)
LEXICAL_FEATURES = ("length_difference", "word_count_difference", "only_stored", "only_asked", "question_word_same",
                    "question_word_stored", "question_word_asked", "first_two_words_same", "stem_jaccard",
                    "last_word_same", "char3_jaccard", "char4_jaccard", "word_sequence_ratio")
#: features over word weights (:class:`WordWeights`) after those
WEIGHTED_FEATURES = ("weighted_jaccard", "weight_only_stored", "weight_only_asked", "heaviest_unmatched",
                     "unmatched_weight_share", "heaviest_unmatched_content")
#: the pair features of a file with word weights (``train_verifier.py --features lexical``)
ALL_PAIR_FEATURES = PAIR_FEATURES + LEXICAL_FEATURES + WEIGHTED_FEATURES
LEGACY_ALL_PAIR_FEATURES = LEGACY_PAIR_FEATURES + LEXICAL_FEATURES + WEIGHTED_FEATURES
#: words that make a swap of their two sides keep the meaning ("A and B" = "B and A")
SYMMETRIC = frozenset({"and", "or", "nor", "vs", "versus"})


class VerifierError(RuntimeError):
    """The verifier file cannot be read, is not a verifier, or does not fit the embedding model."""


def _words(text: str, legacy: bool = False) -> list[str]:
    """Lower-cased words, spelt one way for the ways people type the same question: apostrophes
    dropped and a contracted negation spelt out whether or not its apostrophe was typed
    ("didn't", "didnt" -> "did not"; "today's", "todays" -> "todays"), number words as digits
    ("nine" -> "9"), British endings American ("colour" -> "color");
    ``legacy``: the split of files from before 2026-12-06 (apostrophes kept, only "n't" spelt out)."""
    if legacy:
        return WORD.findall(text.lower().replace("n't", " not"))
    words = []
    for word in PLAIN_WORD.findall(APOSTROPHE.sub("", text.lower())):
        words.extend(CONTRACTED_NEGATIONS.get(word) or (NUMBER_WORDS.get(word) or _american(word),))
    return words


def _american(word: str) -> str:
    if word[-3:] not in SPELLING_TAILS:
        return word
    for british, american in SPELLINGS:
        if word.endswith(british) and len(word) > len(british) + 2:
            return word[:-len(british)] + american
    return word


def _numbers(text: str, legacy: bool) -> set[str]:
    """The numbers a question names, written in digits or (``legacy``: only) in words."""
    digits = set(NUMBER.findall(text))
    if legacy:
        return digits
    return digits | {NUMBER_WORDS[w] for w in PLAIN_WORD.findall(text.lower()) if w in NUMBER_WORDS}


def _names(text: str) -> set[str]:
    """Capitalised words after the first: a cheap, language-model-free named-entity guess."""
    found = CAPITALISED.findall(text)
    return {w.lower() for w in found[1:] if w.lower() not in STOP and w != "I"}


def _dates(words: list[str]) -> set[str]:
    return {w for w in words if w in MONTHS or w in WEEKDAYS or (len(w) == 4 and w.isdigit() and w[:2] in ("19", "20"))}


def _question_word(words: list[str]) -> int:
    """1 + the index in :data:`QUESTION_WORDS` of the first question word among the first three, else 0."""
    return next((QUESTION_WORDS.index(w) + 1 for w in words[:3] if w in QUESTION_WORDS), 0)


def _stem(word: str) -> str:
    return next((word[:-len(s)] for s in SUFFIXES if len(word) > len(s) + 2 and word.endswith(s)), word)


def _grams(joined: str, k: int) -> set[str]:
    return {joined[i:i + k] for i in range(max(len(joined) - k + 1, 1))}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(len(a | b), 1)


def relation_reversed(ws: list[str], wa: list[str]) -> bool:
    """The same words, with two parts swapped across a middle that has no :data:`SYMMETRIC`
    word: ``P X M Y S`` against ``P Y M X S`` ("convert ethane to ethene", "are cats afraid of
    tigers").  Swaps across "and" / "or" ("shame and guilt"), moved phrases ("which sport is your
    favourite" / "which is your favourite sport") and swapped neighbours ("what time it is") keep
    the meaning, and QQP labels them duplicates."""
    if ws == wa or sorted(ws) != sorted(wa):
        return False
    start = next(i for i, (s, a) in enumerate(zip(ws, wa)) if s != a)
    end = len(ws) - next(i for i, (s, a) in enumerate(zip(reversed(ws), reversed(wa))) if s != a)
    s, a = ws[start:end], wa[start:end]
    n = len(s)
    return any(a == s[n - y:] + s[x:n - y] + s[:x] and not SYMMETRIC.intersection(s[x:n - y])
               for x in range(1, n - 1) for y in range(1, n - x))


@dataclass(frozen=True, slots=True)
class WordWeights:
    """Inverse document frequency of words over a set of questions; a word not in the table
    (seen in fewer than two questions) weighs ``unseen``."""

    idf: dict[str, float]
    unseen: float

    @classmethod
    def of(cls, questions: Sequence[str], min_count: int = 2) -> WordWeights:
        """``log((n + 1) / (df + 1)) + 1`` over ``n`` questions; words in fewer than
        ``min_count`` questions are left out of the table (they weigh ``unseen``, as df 1 would)."""
        counts = Counter(w for q in questions for w in set(_words(q)))
        n = len(questions)
        return cls({w: round(math.log((n + 1) / (c + 1)) + 1, 4) for w, c in sorted(counts.items()) if c >= min_count},
                   round(math.log((n + 1) / min_count) + 1, 4))

    def weight(self, words: Iterable[str]) -> float:
        """The summed weight; ``fsum`` is exact, so the (hash-seeded) order of a set cannot move
        a value across a split threshold from one process to the next."""
        return math.fsum(self.idf.get(w, self.unseen) for w in words)

    def heaviest(self, words: Iterable[str]) -> float:
        return max((self.idf.get(w, self.unseen) for w in words), default=0.0)


def weighted_features(ss: set[str], sa: set[str], weights: WordWeights) -> list[float]:
    """The features of :data:`WEIGHTED_FEATURES` of two word sets."""
    only_s, only_a = ss - sa, sa - ss
    unmatched = only_s | only_a
    union = weights.weight(ss | sa) or 1.0
    return [weights.weight(ss & sa) / union, weights.weight(only_s), weights.weight(only_a),
            weights.heaviest(unmatched), weights.weight(unmatched) / union, weights.heaviest(unmatched - STOP)]


def lexical_features(stored: str, asked: str, ws: list[str], wa: list[str]) -> list[float]:
    """The features of :data:`LEXICAL_FEATURES` (``ws``, ``wa``: the two texts' words)."""
    ss, sa = set(ws), set(wa)
    js, ja = " ".join(ws), " ".join(wa)
    qs, qa = _question_word(ws), _question_word(wa)
    return [
        float(abs(len(stored) - len(asked))), float(abs(len(ws) - len(wa))), float(len(ss - sa)), float(len(sa - ss)),
        float(qs == qa), float(qs), float(qa), float(ws[:2] == wa[:2]),
        _jaccard({_stem(w) for w in ss}, {_stem(w) for w in sa}), float(ws[-1:] == wa[-1:]),
        _jaccard(_grams(js, 3), _grams(ja, 3)), _jaccard(_grams(js, 4), _grams(ja, 4)),
        difflib.SequenceMatcher(None, ws, wa, autojunk=False).ratio(),
    ]


def pair_features(stored: str, asked: str, cosine: float, weights: WordWeights | None = None,
                  legacy: bool = False) -> list[float]:
    """The cosine, lexical and guard features of one pair: :data:`PAIR_FEATURES`, and with word
    ``weights`` all of :data:`ALL_PAIR_FEATURES` (``legacy``: as files from before 2026-12-06
    were trained: the older word split, and ``reordered`` in the place of ``relation_reversed``)."""
    ws, wa = _words(stored, legacy), _words(asked, legacy)
    ss, sa = set(ws), set(wa)
    cs, ca = ss - STOP, sa - STOP
    ns, na = _names(stored), _names(asked)
    return [
        cosine,
        len(ss & sa) / max(len(ss | sa), 1),
        len(cs & ca) / max(len(cs | ca), 1),
        float(len(cs ^ ca)),
        min(len(ws), len(wa)) / max(len(ws), len(wa), 1),
        float(ws[:1] != wa[:1]),
        float(_numbers(stored, legacy) != _numbers(asked, legacy)),
        float(_dates(ws) != _dates(wa)),
        float(bool(ss & NEGATIONS) != bool(sa & NEGATIONS)),
        float(bool(ns and na) and ns != na),
        float(ws != wa and sorted(ws) == sorted(wa)) if legacy else float(relation_reversed(ws, wa)),
        *(lexical_features(stored, asked, ws, wa) + weighted_features(ss, sa, weights) if weights is not None else ()),
    ]


def pair_feature_names(weights: WordWeights | None, legacy: bool = False) -> tuple[str, ...]:
    if legacy:
        return LEGACY_ALL_PAIR_FEATURES if weights is not None else LEGACY_PAIR_FEATURES
    return ALL_PAIR_FEATURES if weights is not None else PAIR_FEATURES


def feature_matrix(stored: Sequence[str], asked: Sequence[str], u: np.ndarray, v: np.ndarray,
                   weights: WordWeights | None = None, legacy: bool = False) -> np.ndarray:
    """``(n, pair features + 2 * dim)`` float64 features of n pairs: the pair features
    (:func:`pair_feature_names`), ``|u - v|``, ``u * v``."""
    u = np.atleast_2d(np.asarray(u, dtype=np.float64))
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    cosines = (u * v).sum(axis=1)
    pairs = np.array([pair_features(s, a, float(c), weights, legacy) for s, a, c in zip(stored, asked, cosines)],
                     dtype=np.float64)
    return np.hstack([pairs.reshape(len(cosines), len(pair_feature_names(weights))), np.abs(u - v), u * v])


def _layout(data: dict[str, Any]) -> tuple[WordWeights | None, bool]:
    """The file's word weights (files listing only the first pair features have none), and
    whether it is a legacy file: one naming the older ``reordered`` (every file written before
    2026-12-06), or listing no features at all (every file since lists them)."""
    listed = tuple(n for n in data.get("features", ()) if n not in ("|u-v|", "u*v"))
    legacy = not listed or "reordered" in listed
    if listed in ((), PAIR_FEATURES, LEGACY_PAIR_FEATURES):
        return None, legacy
    if listed not in (ALL_PAIR_FEATURES, LEGACY_ALL_PAIR_FEATURES):
        raise ValueError(f"unknown pair features {list(listed)}")
    table = data["word_weights"]
    return WordWeights({str(w): float(x) for w, x in table["idf"].items()}, float(table["unseen"])), legacy


@dataclass(frozen=True, slots=True)
class Trees:
    """Gradient-boosted trees as flat node arrays (all trees' nodes one after another): a sample
    at node ``n`` goes to ``left[n]`` when ``x[feature[n]] <= threshold[n]``, else to
    ``right[n]``; a leaf's children are itself, so every tree can take ``depth`` steps at once
    (one gather per array and step over all trees: the ensembles here have hundreds of trees)."""

    baseline: float
    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    depth: int

    @classmethod
    def from_padded(cls, baseline: float, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray,
                    right: np.ndarray, is_leaf: np.ndarray, value: np.ndarray, depth: int) -> Trees:
        """From ``(trees, nodes)`` arrays with tree-local child indices (the file's layout)."""
        trees, width = feature.shape
        offset = (np.arange(trees) * width)[:, None]
        own = offset + np.arange(width)[None, :]
        return cls(baseline=baseline, roots=offset.ravel(), feature=feature.ravel(), threshold=threshold.ravel(),
                   left=np.where(is_leaf, own, offset + left).ravel(),
                   right=np.where(is_leaf, own, offset + right).ravel(),
                   value=value.ravel(), depth=depth)

    def raw(self, x: np.ndarray) -> np.ndarray:
        node = np.broadcast_to(self.roots, (x.shape[0], len(self.roots)))
        rows = np.arange(x.shape[0])[:, None]
        for _ in range(self.depth):
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return self.baseline + self.value[node].sum(axis=1)


@dataclass(frozen=True, slots=True)
class Linear:
    """Logistic regression over standardised features: ``w . (x - mean) / scale + b``."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def raw(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights + self.bias


@dataclass(frozen=True, slots=True)
class Verifier:
    """A trained verifier: ``probability`` of the pairs, and the cut for a target precision."""

    model: Trees | Linear
    dim: int
    #: (precision, probability cut, recall there) measured on held-out pairs, precision ascending
    cuts: tuple[tuple[float, float, float], ...]
    #: (precision, cosine threshold, recall there) of the plain threshold on the same pairs
    cosine_cuts: tuple[tuple[float, float, float], ...]
    #: sha256 of the ``model.onnx`` whose vectors it was trained on ("" = not checked)
    embedding_sha256: str
    provenance: dict[str, Any]
    #: word weights of the lexical features; None: the first pair features only (older files)
    weights: WordWeights | None = None
    #: a file from before 2026-12-06: fed the word split and ``reordered`` it was trained on
    legacy: bool = False
    #: the cross-encoder asked after the verifier (``llmcache tune --crossencoder``), if any
    second: SecondOpinion | None = None

    def probability(self, stored: Sequence[str], asked: Sequence[str], u: np.ndarray, v: np.ndarray) -> np.ndarray:
        raw = self.model.raw(feature_matrix(stored, asked, u, v, self.weights, self.legacy))
        return 1.0 / (1.0 + np.exp(-raw))

    def cut_for(self, target_precision: float) -> float:
        """The lowest probability cut whose held-out precision reached ``target_precision``
        (the strictest measured cut when the target is above every measured precision)."""
        return _lookup(self.cuts, target_precision)

    def cosine_threshold_for(self, target_precision: float) -> float:
        """Same, for the plain cosine threshold (used when the verifier is off)."""
        return _lookup(self.cosine_cuts, target_precision)


def _lookup(table: tuple[tuple[float, float, float], ...], target: float) -> float:
    for precision, cut, _ in table:
        if precision >= target - 1e-9:
            return cut
    return table[-1][1]


def load_verifier(path: Path) -> Verifier:
    """Read a verifier file (or ``verifier.json`` in a directory); raise :class:`VerifierError`."""
    if path.is_dir():
        path = path / VERIFIER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise VerifierError(f"{path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise VerifierError(f"{path}: not JSON ({exc})") from exc
    try:
        verifier = verifier_from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise VerifierError(f"{path}: not a {FORMAT} file ({type(exc).__name__}: {exc})") from exc
    if SECTION not in data:
        return verifier
    try:
        return replace(verifier, second=load_second_opinion(path.parent, data[SECTION]))
    except (CrossEncoderError, KeyError, TypeError, ValueError) as exc:
        # the verifier's own cuts were measured without it: still sound, only less recall
        log.error("%s: the second opinion (cross-encoder) is not used, the verifier decides alone: %s", path, exc)
        return verifier


def verifier_from_dict(data: dict[str, Any]) -> Verifier:
    if data.get("format") != FORMAT:
        raise ValueError(f"format {data.get('format')!r}")
    dim = int(data["dim"])
    weights, legacy = _layout(data)
    names = pair_feature_names(weights, legacy)
    model = data["model"]
    if model["kind"] == "trees":
        parts = {name: np.asarray(model[name]) for name in ("feature", "threshold", "left", "right", "is_leaf", "value")}
        width = int(parts["feature"].max()) + 1 if parts["feature"].size else 0
        if len({p.shape for p in parts.values()}) != 1 or width > len(names) + 2 * dim:
            raise ValueError("node arrays of different shapes or features beyond the input")
        built: Trees | Linear = Trees.from_padded(
            baseline=float(model["baseline"]), feature=parts["feature"].astype(np.int64),
            threshold=parts["threshold"].astype(np.float64), left=parts["left"].astype(np.int64),
            right=parts["right"].astype(np.int64), is_leaf=parts["is_leaf"].astype(bool),
            value=parts["value"].astype(np.float64), depth=int(model["depth"]))
    elif model["kind"] == "linear":
        built = Linear(mean=np.asarray(model["mean"], dtype=np.float64), scale=np.asarray(model["scale"], dtype=np.float64),
                       weights=np.asarray(model["weights"], dtype=np.float64), bias=float(model["bias"]))
        if not built.mean.shape == built.scale.shape == built.weights.shape == (len(names) + 2 * dim,):
            raise ValueError("weights do not match the feature count")
    else:
        raise ValueError(f"model kind {model['kind']!r}")
    cuts = tuple(sorted((float(p), float(c), float(r)) for p, c, r in data["cuts"]))
    cosine_cuts = tuple(sorted((float(p), float(c), float(r)) for p, c, r in data["cosine_cuts"]))
    if not cuts or not cosine_cuts:
        raise ValueError("empty precision table")
    return Verifier(model=built, dim=dim, cuts=cuts, cosine_cuts=cosine_cuts,
                    embedding_sha256=str(data.get("embedding_sha256", "")), provenance=dict(data.get("provenance", {})),
                    weights=weights, legacy=legacy)


@dataclass(frozen=True, slots=True)
class MatchPolicy:
    """How the semantic tier decides a hit: the verifier and its probability cut when on, the
    plain cosine threshold otherwise (and for stored entries without text)."""

    threshold: float
    verifier: Verifier | None = None
    cut: float = 1.0
    #: candidates (nearest by cosine) the verifier scores, the best served.  One: re-ranking the
    #: top 4 served 3x more wrong hits on GPTCache's benchmark (docs/benchmarks.md, issue 9)
    candidates: int = 1
    #: candidates below this cosine are not worth scoring (the verifier never accepts them)
    floor: float = 0.5
    #: with a second opinion: the cut of the stacked score (``cut`` is then its gate)
    second_cut: float = 0.0

    def describe(self) -> str:
        if self.verifier is None:
            return f"cosine threshold {self.threshold:.3f}"
        second = "" if self.verifier.second is None else \
            f", then the cross-encoder: stacked score cut {self.second_cut:.3f}"
        return (f"verifier ({self.verifier.provenance.get('kind', '?')}) cut {self.cut:.3f} over the top "
                f"{self.candidates}{second}; cosine threshold {self.threshold:.3f} for entries without text")


def packaged_verifier_path() -> Path:
    from .default_model import PACKAGE_DIR

    return PACKAGE_DIR / VERIFIER_FILE


def verifier_location(explicit: str | None, model_dir: str | None) -> Path | None:
    """The verifier file to use: ``explicit``; else ``verifier.json`` in the model directory;
    else the packaged one when the model is the packaged default; else None."""
    if explicit:
        return Path(explicit)
    if model_dir is not None:
        path = Path(model_dir) / VERIFIER_FILE
        return path if path.is_file() else None
    return packaged_verifier_path()


def fitting_verifier(path: Path, model_sha256: str) -> Verifier:
    """The verifier at ``path``, refused (:class:`VerifierError`) when it was trained on another
    embedding model's vectors: its features would be meaningless."""
    verifier = load_verifier(path)
    if verifier.embedding_sha256 and verifier.embedding_sha256 != model_sha256:
        raise VerifierError(f"{path} was trained on the vectors of another embedding model (sha256 "
                            f"{verifier.embedding_sha256[:12]}..., loaded {model_sha256[:12]}...)")
    return verifier


def match_policy(settings: Settings, model_sha256: str) -> MatchPolicy:
    """The policy ``settings`` ask for, for the embedding model whose ``model.onnx`` has
    ``model_sha256``.  A verifier that cannot be loaded or does not fit the model is not used:
    the tier then falls back to the cosine threshold, and says so in the log."""
    path = verifier_location(settings.verifier_path, settings.embedding_model)
    verifier = None
    if path is not None and (settings.verifier == "on" or settings.target_precision is not None):
        try:
            verifier = fitting_verifier(path, model_sha256)
        except VerifierError as exc:
            log.error("match verifier not used: %s", exc)
    threshold = settings.similarity_threshold
    if settings.target_precision is not None:
        if verifier is not None:
            threshold = verifier.cosine_threshold_for(settings.target_precision)
        else:
            log.error("target precision %.3f asked for but no verifier file fits the embedding model: "
                      "using the similarity threshold %.3f", settings.target_precision, threshold)
    if verifier is None or settings.verifier == "off":
        return MatchPolicy(threshold=threshold)
    target = settings.target_precision if settings.target_precision is not None else DEFAULT_TARGET_PRECISION
    if verifier.second is not None:
        return MatchPolicy(threshold=threshold, verifier=verifier, cut=verifier.second.gate,
                           second_cut=_lookup(verifier.second.cuts, target))
    return MatchPolicy(threshold=threshold, verifier=verifier, cut=verifier.cut_for(target))
