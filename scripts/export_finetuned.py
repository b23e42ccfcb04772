"""Export a fine-tuned sentence-transformers model to the int8 ONNX directory the sidecar loads,
and check it against the torch model it came from.

    python scripts/export_finetuned.py /work/ft/fold0 /work/ft/fold0-onnx

Writes ``OUT/model.onnx`` (int8, onnxruntime dynamic quantisation) and ``OUT/tokenizer.json``,
then prints the cosine between the ONNX vectors and the torch vectors (60 reference sentences of
``tests/data`` and 500 QQP dev questions), the file size and the sha256.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import REPO, load_rows  # noqa: E402

from llmcache_sidecar.default_model import sha256_of  # noqa: E402
from llmcache_sidecar.embedding_tuning import export_cosines, export_onnx  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="sentence-transformers model directory")
    parser.add_argument("out", type=Path)
    parser.add_argument("--fp32", action="store_true", help="skip the int8 quantisation")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    export_onnx(args.source, args.out, quantize=not args.fp32)
    sentences = json.loads((REPO / "tests/data/reference-sentences.json").read_text())
    sentences += sorted({r["a"] for r in load_rows()[:500]})
    cosines = export_cosines(args.source, args.out, sentences)
    report = {"sentences": len(sentences), "min_cos": round(float(cosines.min()), 4),
              "mean_cos": round(float(cosines.mean()), 5), "bytes": (args.out / "model.onnx").stat().st_size,
              "sha256": sha256_of(args.out / "model.onnx"), "tokenizer_sha256": sha256_of(args.out / "tokenizer.json")}
    print(json.dumps(report, indent=1))
    if np.isnan(cosines).any():
        raise SystemExit("NaN vectors")


if __name__ == "__main__":
    main()
