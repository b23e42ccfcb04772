"""The verifier's optional second opinion: a cross-encoder that reads both questions together.

``llmcache tune --crossencoder`` trains one on the user's labelled pairs (from the
all-MiniLM-L6-v2 weights; ``crossencoder_training``) and writes it beside the tuned
``verifier.json`` as int8 ONNX.  The sidecar then asks it only about candidates the verifier
already rates likely (probability >= ``gate``): the stacked score
``(1 - weight) * logit(verifier probability) + weight * cross-encoder logit`` must reach the cut
measured for the target precision on the held-out pairs.  On the QQP dev pairs this lifted recall
at precision 0.85 by 6-11 points per fold, at ~2-4 ms per consulted candidate on one core; trained
on short Quora questions it also refused many of GPTCache's long reworded statements, which is
why it is opt-in and trained on the user's own pairs (docs/benchmarks.md, issue 9).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: the second opinion's entry in verifier.json
SECTION = "second_opinion"
MODEL_FILE = "crossencoder.onnx"
TOKENIZER_FILE = "crossencoder-tokenizer.json"


class CrossEncoderError(RuntimeError):
    """The cross-encoder's files are missing, altered or unreadable."""


class CrossEncoder:
    """A pair classifier in ONNX (inputs as BERT's, output ``logit``): one logit per
    (stored, asked) pair, the two orders averaged (it was trained on both)."""

    def __init__(self, model: Path, tokenizer: Path, max_tokens: int, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer))
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise CrossEncoderError(f"cannot load the cross-encoder {model}: {exc}") from exc
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def logits(self, stored: Sequence[str], asked: Sequence[str]) -> np.ndarray:
        n = len(stored)
        pairs = list(zip(stored, asked)) + list(zip(asked, stored))
        encodings = self._tokenizer.encode_batch(pairs)
        feeds = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                 "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        out = self._session.run(None, feeds)[0].astype(np.float64)
        return (out[:n] + out[n:]) / 2


def logit(probability: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


@dataclass(frozen=True, slots=True)
class SecondOpinion:
    encoder: CrossEncoder
    #: share of the cross-encoder's logit in the stacked score
    weight: float
    #: verifier probability from which the cross-encoder is asked; below it, no hit
    gate: float
    #: (precision, stacked-score cut, recall there) on the held-out pairs, precision ascending
    cuts: tuple[tuple[float, float, float], ...]

    def stacked(self, probability: np.ndarray, ce_logit: np.ndarray) -> np.ndarray:
        return (1 - self.weight) * logit(probability) + self.weight * ce_logit

    def scores(self, probability: np.ndarray, stored: Sequence[str], asked: Sequence[str], batch: int = 64
               ) -> np.ndarray:
        """The score the sidecar compares with the cut, for many pairs at once: stacked where the
        verifier's probability reaches the gate (the cross-encoder asked about those only), -inf
        (never a hit) below it."""
        probability = np.asarray(probability, dtype=np.float64)
        asked_idx = np.flatnonzero(probability >= self.gate)
        ce = np.zeros(len(probability))
        for start in range(0, len(asked_idx), batch):
            chunk = asked_idx[start:start + batch]
            ce[chunk] = self.encoder.logits([stored[i] for i in chunk], [asked[i] for i in chunk])
        return np.where(probability >= self.gate, self.stacked(probability, ce), -np.inf)


def load_second_opinion(directory: Path, section: dict[str, Any]) -> SecondOpinion:
    """The second opinion a verifier file's ``second_opinion`` entry describes; its files sit in
    the verifier file's directory and must have the sha256 the entry pins."""
    from .default_model import sha256_of

    files = {}
    for key in ("model", "tokenizer"):
        path = directory / str(section[key])
        if not path.is_file():
            raise CrossEncoderError(f"{path} is missing")
        if sha256_of(path) != section[f"{key}_sha256"]:
            raise CrossEncoderError(f"{path}: sha256 is not the one {SECTION} pins")
        files[key] = path
    cuts = tuple(sorted((float(p), float(c), float(r)) for p, c, r in section["cuts"]))
    if not cuts:
        raise CrossEncoderError("empty precision table")
    return SecondOpinion(encoder=CrossEncoder(files["model"], files["tokenizer"], int(section["max_tokens"])),
                         weight=float(section["weight"]), gate=float(section["gate"]), cuts=cuts)
