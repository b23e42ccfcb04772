"""``llmcache calibrate`` and the measures behind it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmcache_sidecar.calibration import (
    PairsError,
    gptcache_mock_benchmark,
    load_pairs,
    precision_recall_curve,
    threshold_for_precision,
)
from llmcache_sidecar.embedder import OnnxEmbedder
from llmcache_sidecar.tools import main

PAIRS = [
    ("How do I reset my password?", "I forgot my password, how can I reset it?", True),
    ("Can dogs eat chocolate?", "Is chocolate poisonous for dogs?", True),
    ("How can I improve my sleep quality?", "What should I do to sleep better at night?", True),
    ("Will it rain in London tomorrow?", "What's the weather like in London tomorrow?", True),
    ("How do you convert ethane to ethene?", "How do you convert ethene to ethane?", False),
    ("How many moons does Jupiter have?", "How many moons does Saturn have?", False),
    ("What is the capital of France?", "What is the best way to learn Python?", False),
    ("Why is the sky blue?", "Tell me a joke about programmers.", False),
]


def write_pairs(path: Path, pairs: list[tuple[str, str, bool]]) -> Path:
    path.write_text("".join(json.dumps({"a": a, "b": b, "duplicate": d}) + "\n" for a, b, d in pairs))
    return path


def test_curve_and_threshold_choice() -> None:
    similarities = np.array([0.99, 0.95, 0.91, 0.90, 0.85, 0.60])
    duplicate = np.array([True, False, True, True, False, True])
    curve = precision_recall_curve(similarities, duplicate, [0.5, 0.9, 0.95, 0.999])
    assert [(p.hits, round(p.precision, 3), p.recall) for p in curve] == [
        (6, round(4 / 6, 3), 1.0), (4, 0.75, 0.75), (2, 0.5, 0.25), (0, 1.0, 0.0)]
    chosen = threshold_for_precision(similarities, duplicate, 0.7, [0.5, 0.9, 0.95, 0.999])
    assert chosen is not None and chosen.threshold == 0.9
    assert threshold_for_precision(similarities, duplicate, 0.99, [0.5, 0.9, 0.95, 0.999]) is None


def test_calibrate_prints_the_curve_and_the_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    assert main(["calibrate", "--pairs", str(pairs), "--target-precision", "0.6", "--device", "cpu",
                 "--no-verifier"]) == 0
    out = capsys.readouterr().out
    assert "8 pairs, 4 duplicates" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:2] in ("0.", "1.")]
    assert len(rows) == 50 and rows[0][0] == "0.500" and rows[-1][0] == "0.990"
    last = out.strip().splitlines()[-1]
    # the hard negatives (ethane/ethene, Jupiter/Saturn) score as high as the paraphrases
    assert last.startswith("threshold 0.500: precision 0.667, recall 1.000")


def test_calibrate_json_curve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    assert main(["calibrate", "--pairs", str(pairs), "--json", "--step", "0.1", "--target-precision", "0.6",
                 "--device", "cpu"]) == 0
    curve = json.loads(capsys.readouterr().out)
    assert [p["threshold"] for p in curve] == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert curve[0] == {"threshold": 0.5, "hits": 6, "precision": 0.6667, "recall": 1.0}
    assert all(p["hits"] >= q["hits"] for p, q in zip(curve, curve[1:]))


def test_calibrate_rejects_bad_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "x", "b": "y"}\n')
    assert main(["calibrate", "--pairs", str(bad)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    with pytest.raises(PairsError, match="no pairs"):
        load_pairs(write_pairs(tmp_path / "empty.jsonl", []))


def test_calibrate_says_when_no_threshold_reaches_the_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", [("Why is the sky blue?", "Why is the sky blue?", False)])
    assert main(["calibrate", "--pairs", str(pairs), "--target-precision", "0.5", "--device", "cpu"]) == 1
    assert "no threshold reaches precision 0.5" in capsys.readouterr().err


def test_gptcache_mock_counts_right_wrong_and_miss(onnx_embedder: OnnxEmbedder) -> None:
    origins = ["How do I reset my password?", "Can dogs eat chocolate?", "What is the capital of France?"]
    similars = ["I forgot my password, how can I reset it?", "Is chocolate poisonous for dogs?",
                "Tell me a joke about programmers."]
    low, high = gptcache_mock_benchmark(onnx_embedder, origins, similars, [-1.0, 0.7])
    assert (low.right, low.wrong, low.miss) == (2, 1, 0)  # everything hits at -1; the joke hits a wrong origin
    assert (high.right, high.wrong, high.miss) == (2, 0, 1)
