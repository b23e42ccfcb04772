"""Choosing the semantic threshold from labelled pairs, measured the way the cache uses it.

A pair ``{"a", "b", "duplicate"}`` is read as a cache event: ``a`` was stored, ``b`` is asked.
At threshold ``t`` the pair is a *hit* when ``cosine(a, b) >= t``; precision is the share of hits
that are real duplicates (a wrong hit serves someone else's answer), recall the share of
duplicates that hit.  The chosen threshold is the lowest one on the grid whose precision meets
the target: the most hits at the asked-for correctness.  With the match verifier, the same
measure is taken over its probability cuts (:func:`verifier_curve`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .embedder import OnnxEmbedder
from .verifier import Verifier


class PairsError(ValueError):
    """The pairs file cannot be read or a line is not a labelled pair."""


@dataclass(frozen=True, slots=True)
class LabelledPair:
    a: str
    b: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class CurvePoint:
    threshold: float
    hits: int
    precision: float
    recall: float


def load_pairs(path: Path) -> list[LabelledPair]:
    """Read JSON lines ``{"a": str, "b": str, "duplicate": bool}``; blank lines are skipped."""
    pairs = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PairsError(f"{path}: {exc.strerror}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pair = LabelledPair(a=row["a"], b=row["b"], duplicate=row["duplicate"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PairsError(f"{path}:{number}: expected {{\"a\": str, \"b\": str, \"duplicate\": bool}} ({exc})") from exc
        if not (isinstance(pair.a, str) and isinstance(pair.b, str) and isinstance(pair.duplicate, bool)):
            raise PairsError(f"{path}:{number}: a and b must be strings, duplicate a boolean")
        pairs.append(pair)
    if not pairs:
        raise PairsError(f"{path}: no pairs")
    return pairs


def embed_texts(embedder: OnnxEmbedder, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Embed many texts, batching texts of similar length together (less padding, same vectors)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors = np.empty((len(texts), embedder.dim), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        vectors[chunk] = embedder.embed([texts[i] for i in chunk])
    return vectors


def pair_similarities(embedder: OnnxEmbedder, pairs: Sequence[LabelledPair]) -> np.ndarray:
    vectors = embed_texts(embedder, [p.a for p in pairs] + [p.b for p in pairs])
    return (vectors[: len(pairs)] * vectors[len(pairs):]).sum(axis=1)


def threshold_grid(start: float = 0.50, stop: float = 0.99, step: float = 0.01) -> list[float]:
    count = int((stop - start) / step + 1e-9) + 1
    return [round(start + i * step, 4) for i in range(count)]


def precision_recall_curve(similarities: np.ndarray, duplicate: np.ndarray, thresholds: Iterable[float]) -> list[CurvePoint]:
    total_duplicates = max(int(duplicate.sum()), 1)
    points = []
    for threshold in thresholds:
        hit = similarities >= threshold
        hits = int(hit.sum())
        right = int((hit & duplicate).sum())
        points.append(CurvePoint(threshold, hits, right / hits if hits else 1.0, right / total_duplicates))
    return points


def threshold_for_precision(similarities: np.ndarray, duplicate: np.ndarray, target: float,
                            thresholds: Iterable[float] | None = None) -> CurvePoint | None:
    """The lowest threshold whose precision is at least ``target`` (and that hits at all)."""
    curve = precision_recall_curve(similarities, duplicate, thresholds or threshold_grid())
    meeting = [p for p in curve if p.hits and p.precision >= target]
    return min(meeting, key=lambda p: p.threshold) if meeting else None


@dataclass(frozen=True, slots=True)
class MockOutcome:
    threshold: float
    right: int
    wrong: int
    miss: int


def gptcache_mock_benchmark(embedder: OnnxEmbedder, origins: Sequence[str], similars: Sequence[str],
                            thresholds: Iterable[float]) -> list[MockOutcome]:
    """GPTCache's benchmark: every origin stored, every similar asked; the nearest origin above
    the threshold is a right hit when it is the asked pair's own origin, else a wrong hit."""
    stored = embed_texts(embedder, origins)
    asked = embed_texts(embedder, similars)
    scores = asked @ stored.T
    nearest = scores.argmax(axis=1)
    best = scores[np.arange(len(similars)), nearest]
    own = nearest == np.arange(len(similars))
    outcomes = []
    for threshold in thresholds:
        hit = best >= threshold
        right = int((hit & own).sum())
        wrong = int((hit & ~own).sum())
        outcomes.append(MockOutcome(threshold, right, wrong, len(similars) - right - wrong))
    return outcomes


def verifier_curve(verifier: Verifier, embedder: OnnxEmbedder, pairs: Sequence[LabelledPair]) -> list[tuple[float, CurvePoint]]:
    """For each row of the verifier's precision table (measured on its own held-out pairs): the
    precision and recall its cut gives on ``pairs`` (``CurvePoint.threshold`` is the cut).  With a
    second opinion, the decision the sidecar makes: the stacked score and its table, the
    cross-encoder asked where the verifier's probability reaches the gate."""
    vectors = embed_texts(embedder, [p.a for p in pairs] + [p.b for p in pairs])
    probability = verifier.probability([p.a for p in pairs], [p.b for p in pairs], vectors[: len(pairs)],
                                       vectors[len(pairs):])
    duplicate = np.array([p.duplicate for p in pairs])
    score, cuts = probability, verifier.cuts
    if verifier.second is not None:
        score = verifier.second.scores(probability, [p.a for p in pairs], [p.b for p in pairs])
        cuts = verifier.second.cuts
    return [(precision, precision_recall_curve(score, duplicate, [cut])[0]) for precision, cut, _ in cuts]
