"""``llmcache tune`` end to end on a small labelled pairs file (the first QQP dev pairs), and
``llmcache calibrate`` with the verifier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llmcache_sidecar.config import load_settings
from llmcache_sidecar.default_model import MODEL_SHA256, sha256_of
from llmcache_sidecar.tools import main
from llmcache_sidecar.verifier import load_verifier, match_policy

DEV_PAIRS = Path(__file__).resolve().parents[3] / "shared/data/qqp-pairs-dev.jsonl"


@pytest.fixture
def small_pairs(tmp_path: Path) -> Path:
    if not DEV_PAIRS.is_file():
        pytest.skip(f"{DEV_PAIRS} is absent (the shared evaluation data)")
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(DEV_PAIRS.read_text().splitlines(keepends=True)[:300]))
    return path


def test_tune_trains_calibrates_and_writes_a_verifier_the_sidecar_loads(
        small_pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "tuned"
    assert main(["tune", "--pairs", str(small_pairs), "--out", str(out), "--target-precision", "0.8"]) == 0
    printed = capsys.readouterr().out
    assert "pairs:" in printed and "held out" in printed
    assert "cosine threshold (current model)" in printed and "tuned verifier" in printed
    assert f"LLMCACHE_VERIFIER_PATH={out}" in printed
    verifier = load_verifier(out)
    assert verifier.embedding_sha256 == MODEL_SHA256
    assert verifier.provenance["data_sha256"] == sha256_of(small_pairs)
    assert all(0.7 <= p <= 0.99 for p, _, _ in verifier.cuts)
    assert verifier.weights is not None and verifier.provenance["pair_features"] == "lexical", \
        "tune trains the packaged verifier's layout: every pair feature, word weights from the user's questions"
    assert "how" in verifier.weights.idf, "the word weights come from the training questions"
    policy = match_policy(load_settings({"LLMCACHE_UPSTREAM_URL": "http://up:8000", "LLMCACHE_VERIFIER_PATH": str(out),
                                         "LLMCACHE_TARGET_PRECISION": "0.8"}), MODEL_SHA256)
    assert policy.verifier is not None and policy.cut == verifier.cut_for(0.8)


def test_tune_can_train_the_first_layout(small_pairs: Path, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "tuned"
    assert main(["tune", "--pairs", str(small_pairs), "--out", str(out), "--target-precision", "0.8",
                 "--features", "base"]) == 0
    verifier = load_verifier(out)
    assert verifier.weights is None and verifier.provenance["pair_features"] == "base"


def test_tune_refuses_pairs_it_cannot_learn_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    only_duplicates = tmp_path / "dups.jsonl"
    only_duplicates.write_text("".join(json.dumps({"a": f"question {i}?", "b": f"question {i} please?",
                                                   "duplicate": True}) + "\n" for i in range(20)))
    assert main(["tune", "--pairs", str(only_duplicates), "--out", str(tmp_path / "x")]) == 2
    assert "needs duplicates and non-duplicates" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"a": "x"}\n')
    assert main(["tune", "--pairs", str(broken), "--out", str(tmp_path / "y")]) == 2


def test_calibrate_reports_the_verifier(small_pairs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--pairs", str(small_pairs), "--target-precision", "0.8", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "match verifier" in out and "LLMCACHE_TARGET_PRECISION" in out
    section = out.split("match verifier", 1)[1].split("\nthreshold ", 1)[0]
    rows = [line.split() for line in section.splitlines()[2:] if line.strip()]
    assert rows and all(len(row) == 5 and 0.0 <= float(row[1]) <= 1.0 for row in rows)


@pytest.mark.slow
def test_tune_with_finetune_writes_a_model_directory_the_sidecar_loads(small_pairs: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """--finetune: a few training steps, the int8 ONNX export, a verifier pinned to the new model."""
    pytest.importorskip("sentence_transformers")
    from llmcache_sidecar.default_model import model_files
    from llmcache_sidecar.embedder import OnnxEmbedder

    out = tmp_path / "tuned"
    assert main(["tune", "--pairs", str(small_pairs), "--out", str(out), "--finetune", "--max-minutes", "0.2"]) == 0
    assert "tuned verifier + fine-tuned model" in capsys.readouterr().out
    vectors = OnnxEmbedder(model_files(str(out)), "cpu").embed(["How do I reset my password?"])
    assert vectors.shape == (1, 384) and abs(float((vectors ** 2).sum()) - 1.0) < 1e-4
    model_sha = sha256_of(out / "model.onnx")
    assert load_verifier(out).embedding_sha256 == model_sha
    policy = match_policy(load_settings({"LLMCACHE_UPSTREAM_URL": "http://up:8000", "LLMCACHE_EMBEDDING_MODEL": str(out)}),
                          model_sha)
    assert policy.verifier is not None, "the verifier beside the model is picked up"


@pytest.mark.slow
def test_tune_with_crossencoder_writes_a_second_opinion_the_sidecar_loads(
        tuned_with_crossencoder: tuple[Path, Path, str]) -> None:
    """--crossencoder: trained on the training pairs, int8 ONNX beside verifier.json, pinned by
    sha256, calibrated on the held-out pairs; the policy then gates on the verifier and cuts the
    stacked score."""
    out, pairs, printed = tuned_with_crossencoder
    assert "tuned verifier + cross-encoder" in printed and "crossencoder.onnx" in printed
    document = json.loads((out / "verifier.json").read_text())
    section = document["second_opinion"]
    assert section["model_sha256"] == sha256_of(out / "crossencoder.onnx")
    assert section["training"]["steps"] > 0 and "--crossencoder" in document["provenance"]["command"]
    verifier = load_verifier(out)
    assert verifier.second is not None
    assert all(0.7 <= p <= 0.99 for p, _, _ in verifier.second.cuts)
    stored, asked = "How do I learn Python quickly?", "What is the fastest way to learn Python?"
    both = verifier.second.encoder.logits([stored, asked], [asked, stored])
    assert both.shape == (2,) and abs(both[0] - both[1]) < 1e-4, "both orders are averaged: symmetric"
    gated = verifier.second.scores(np.array([0.2, 0.9]), [stored, stored], [asked, asked])
    assert gated[0] == -np.inf, "below the gate the cross-encoder is not asked and there is no hit"
    assert gated[1] == pytest.approx(verifier.second.stacked(np.array([0.9]), both[:1])[0], abs=1e-4)
    policy = match_policy(load_settings({"LLMCACHE_UPSTREAM_URL": "http://up:8000", "LLMCACHE_VERIFIER_PATH": str(out),
                                         "LLMCACHE_TARGET_PRECISION": "0.8"}), MODEL_SHA256)
    assert policy.verifier is not None and policy.cut == verifier.second.gate
    assert policy.second_cut == next(cut for p, cut, _ in verifier.second.cuts if p >= 0.8)
    assert "cross-encoder" in policy.describe()


@pytest.mark.slow
def test_an_altered_crossencoder_is_not_used_and_the_verifier_decides_alone(
        tuned_with_crossencoder: tuple[Path, Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out, _, _ = tuned_with_crossencoder
    copy = tmp_path / "tuned"
    shutil.copytree(out, copy)
    with (copy / "crossencoder.onnx").open("ab") as handle:
        handle.write(b"\0")
    verifier = load_verifier(copy)
    assert verifier.second is None and verifier.cuts == load_verifier(out).cuts
    assert "not used" in caplog.text and "sha256" in caplog.text
    policy = match_policy(load_settings({"LLMCACHE_UPSTREAM_URL": "http://up:8000", "LLMCACHE_VERIFIER_PATH": str(copy),
                                         "LLMCACHE_TARGET_PRECISION": "0.8"}), MODEL_SHA256)
    assert policy.verifier is not None and policy.cut == verifier.cut_for(0.8)


@pytest.mark.slow
def test_calibrate_measures_the_stacked_decision_of_a_second_opinion(
        tuned_with_crossencoder: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    out, pairs, _ = tuned_with_crossencoder
    assert main(["calibrate", "--pairs", str(pairs), "--target-precision", "0.8", "--device", "cpu",
                 "--verifier", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cross-encoder second opinion" in printed
    section = printed.split("match verifier", 1)[1].split("\nthreshold ", 1)[0]
    rows = [line.split() for line in section.splitlines()[2:] if line.strip()]
    second = load_verifier(out).second
    assert second is not None
    assert [float(row[1]) for row in rows] == pytest.approx([cut for _, cut, _ in second.cuts], abs=1e-3), \
        "the cuts measured are the stacked score's, not the verifier's"
