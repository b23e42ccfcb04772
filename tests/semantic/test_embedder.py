"""The embedder: the shipped model against sentence-transformers, pooling, batching, devices."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from llmcache_sidecar.default_model import ModelFiles, ModelFilesError, default_model_files, model_files
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


def _tiny_model(directory: Path, *, quantised: bool) -> ModelFiles:
    """A two-node model over the packaged tokenizer (token embedding, one MatMul), its MatMul
    dynamically quantised to int8 by onnxruntime when asked: the kind of export that scales a
    batch's activations together.  Token vectors grow with the token id, so texts differ in range."""
    onnx = pytest.importorskip("onnx", reason="onnx comes with the tune / mpnet extras (CI installs them)")
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tokenizer = default_model_files().tokenizer
    vocabulary = len(json.loads(tokenizer.read_text())["model"]["vocab"])
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["tokens"]),
         helper.make_node("MatMul", ["tokens", "weights"], ["last_hidden_state"])],
        "tiny", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
                 helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", 16])],
        [numpy_helper.from_array((rng.normal(size=(vocabulary, 16)) * np.linspace(0.1, 10, vocabulary)[:, None])
                                 .astype(np.float32), "table"),
         numpy_helper.from_array(rng.normal(size=(16, 16)).astype(np.float32), "weights")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, directory / "fp32.onnx")
    if quantised:
        quantize_dynamic(directory / "fp32.onnx", directory / "model.onnx", weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"])
    else:
        (directory / "fp32.onnx").rename(directory / "model.onnx")
    shutil.copy(tokenizer, directory / "tokenizer.json")
    return model_files(str(directory))


@pytest.mark.parametrize("quantised", [False, True])
def test_a_model_whose_vectors_depend_on_the_batch_runs_one_text_at_a_time(tmp_path: Path, quantised: bool) -> None:
    """A dynamically quantised model gives a text another vector in another batch; the embedder
    finds that out at load and embeds such a model's texts one at a time, so a question's vector
    is the same however the batcher grouped it.  A float model keeps its batches."""
    embedder = OnnxEmbedder(_tiny_model(tmp_path, quantised=quantised), "cpu")
    texts = ["short", "a much longer sentence that needs padding for the short one in the same batch", "mid size one"]
    alone = np.concatenate([embedder.embed([t]) for t in texts])
    assert embedder.one_at_a_time is quantised
    assert np.allclose(embedder.embed(texts), alone, atol=1e-6)


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
