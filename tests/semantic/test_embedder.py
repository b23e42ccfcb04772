"""The embedder: the shipped model against sentence-transformers, pooling, batching, devices."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from llmcache_sidecar.default_model import ModelFilesError, default_model_files, model_files
from llmcache_sidecar.embedder import BatchingEmbedder, EmbedderError, OnnxEmbedder, choose_providers

DATA = Path(__file__).resolve().parent.parent / "data"
#: the shipped model is int8; measured minimum cosine to the fp32 reference is 0.997
INT8_MIN_COSINE = 0.98


def test_matches_reference_vectors(onnx_embedder: OnnxEmbedder) -> None:
    """Every sentence's vector is within cosine 0.98 of sentence-transformers' (int8 model)."""
    sentences = json.loads((DATA / "reference-sentences.json").read_text())
    reference = np.load(DATA / "reference-vectors.npy")
    assert len(sentences) >= 50 and reference.shape == (len(sentences), 384)
    cosines = (onnx_embedder.embed(sentences) * reference).sum(axis=1)
    worst = int(cosines.argmin())
    assert cosines[worst] >= INT8_MIN_COSINE, f"{sentences[worst]!r}: cosine {cosines[worst]:.4f}"


def test_vectors_are_unit_length_and_batch_independent(onnx_embedder: OnnxEmbedder) -> None:
    texts = ["short", "a much longer sentence that needs padding for the short one in the same batch"]
    together = onnx_embedder.embed(texts)
    alone = np.stack([onnx_embedder.embed([t])[0] for t in texts])
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.allclose(together, alone, atol=1e-4)


def test_paraphrase_is_closer_than_an_unrelated_question(onnx_embedder: OnnxEmbedder) -> None:
    a, b, c = onnx_embedder.embed(["How do I reset my password?", "I forgot my password, how can I reset it?",
                                   "What is the capital of France?"])
    assert float(a @ b) > 0.8 > float(a @ c)


async def test_batcher_returns_each_caller_its_own_vector(onnx_embedder: OnnxEmbedder) -> None:
    texts = [f"question number {i} about topic {'abcdefghij'[i % 10]}" for i in range(24)]
    expected = onnx_embedder.embed(texts)
    batcher = BatchingEmbedder(onnx_embedder, max_batch=8)
    try:
        vectors = await asyncio.gather(*(batcher.embed(t) for t in texts))
        assert batcher.batches_run < len(texts), "concurrent calls were not batched"
        for i, vector in enumerate(vectors):
            assert float(vector @ expected[i]) > 0.9999, texts[i]
            assert int((expected @ vector).argmax()) == i, texts[i]
        # a lone call is answered without anyone else calling
        assert float(await batcher.embed(texts[0]) @ expected[0]) > 0.9999
    finally:
        await batcher.aclose()


async def test_closed_batcher_raises_embedder_error(onnx_embedder: OnnxEmbedder) -> None:
    batcher = BatchingEmbedder(onnx_embedder)
    await batcher.aclose()
    with pytest.raises(EmbedderError) as info:
        await batcher.embed("anything")
    assert info.value.backend == "embedder"


def test_model_directory_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError, match="model.onnx is missing"):
        model_files(str(tmp_path))
    files = default_model_files()
    shutil.copy(files.tokenizer, tmp_path / "tokenizer.json")
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(EmbedderError, match="cannot load"):
        OnnxEmbedder(model_files(str(tmp_path)), "cpu")


def test_model_directory_loads_a_copy_of_the_default(tmp_path: Path) -> None:
    files = default_model_files()
    shutil.copy(files.model, tmp_path / "model.onnx")
    shutil.copy(files.tokenizer, tmp_path / "tokenizer.json")
    embedder = OnnxEmbedder(model_files(str(tmp_path)), "cpu")
    assert embedder.dim == 384 and embedder.provider == "CPUExecutionProvider"


def test_device_choice(caplog: pytest.LogCaptureFixture) -> None:
    with_gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", with_gpu)[0] == "CUDAExecutionProvider"
    assert choose_providers("cuda", with_gpu)[0] == "CUDAExecutionProvider"
    assert choose_providers("cpu", with_gpu) == ["CPUExecutionProvider"]
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING):
        assert choose_providers("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert "onnxruntime-gpu" in caplog.text
