"""Cross-validation folds over labelled pairs, split by question text, and the metrics of issue 9.

Shared by ``scripts/verify_experiments.py`` and ``scripts/finetune_embedder.py``.  Two pairs that
share a question (compared lower-cased, whitespace-collapsed) are always in the same fold, so no
question is seen in training and in the held-out fold (union-find over the questions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmcache_sidecar.verifier_training import question_groups

REPO = Path(__file__).resolve().parent.parent
DEV_PAIRS = REPO.parent / "shared/data/qqp-pairs-dev.jsonl"
MOCK_PAIRS = REPO.parent / "shared/data/gptcache-mock-pairs.json"


def load_rows(path: Path = DEV_PAIRS) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def question_folds(rows: list[dict], k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold number (0..k-1) of each pair; pairs connected through a shared question share a fold."""
    return question_groups([(r["a"], r["b"]) for r in rows], k, seed)


def recall_at_precision(scores: np.ndarray, labels: np.ndarray, target: float = 0.85) -> tuple[float, float]:
    """Best recall over all cut-offs whose precision is >= target, and that cut-off (score >= t)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(bool)
    tp = np.cumsum(y)
    hits = np.arange(1, len(y) + 1)
    # only cut between distinct scores
    last_of_run = np.r_[s[1:] != s[:-1], True]
    ok = (tp / hits >= target) & last_of_run
    if not ok.any():
        return 0.0, float("inf")
    recall = tp / max(y.sum(), 1)
    i = int(np.flatnonzero(ok)[np.argmax(recall[ok])])
    return float(recall[i]), float(s[i])


def precision_recall_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    hit = scores >= threshold
    y = labels.astype(bool)
    right = int((hit & y).sum())
    return (right / hit.sum() if hit.sum() else 1.0), right / max(int(y.sum()), 1)
