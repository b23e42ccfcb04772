"""The questions a benchmark stores and asks, all from ``../shared/data/`` (never copied here).

- *stored*: the questions whose answers the cache holds before the load starts.  First every real
  question that is never asked (QQP dev ``a`` texts, GPTCache's mock ``origin`` and ``similar``
  texts: about 11,500), then, when more entries are wanted than there are real questions,
  *synthetic* ones: the first half of one real stored question's words followed by the second
  half of another's ("How do I learn" + "the sky blue?").  They are real words in question
  form, as long as real questions and embedded by the real model, so they fill the index where
  questions live; being half of a question each, they rarely come near the hit threshold, so
  they do not steal the paraphrases' hits (the run counts where hits point).
- *paraphrases*: the ``b`` of every QQP duplicate pair (never stored): a semantic hit when the
  model finds its ``a`` similar enough, a miss otherwise (the sidecar's header says which).
- *unseen*: the ``b`` of every non-duplicate pair (never stored): misses, unless the model finds
  a stored question close enough (a wrong hit, which the header also shows).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
QQP_FILE = "qqp-pairs-dev.jsonl"
MOCK_FILE = "gptcache-mock-pairs.json"


class DataMissing(RuntimeError):
    """The shared evaluation data is not where the benchmark expects it."""


@dataclass(frozen=True)
class Corpus:
    #: real questions first (``real_count`` of them), then synthetic ones
    stored: list[str]
    real_count: int
    #: (asked text, index in ``stored`` of the question it paraphrases)
    paraphrases: list[tuple[str, int]]
    unseen: list[str]


def _read_pairs(data_dir: Path) -> tuple[list[dict[str, object]], list[dict[str, str]]]:
    qqp, mock = data_dir / QQP_FILE, data_dir / MOCK_FILE
    if not qqp.is_file() or not mock.is_file():
        raise DataMissing(f"the benchmark needs {qqp} and {mock} (the shared evaluation data)")
    pairs = [json.loads(line) for line in qqp.read_text(encoding="utf-8").splitlines() if line.strip()]
    return pairs, json.loads(mock.read_text(encoding="utf-8"))


def load_corpus(entries: int, data_dir: Path = DATA_DIR, seed: int = 10) -> Corpus:
    """``entries`` stored questions (real ones first, synthetic beyond), and the asked ones."""
    pairs, mock = _read_pairs(data_dir)
    asked = {str(p["b"]) for p in pairs}
    real: dict[str, int] = {}
    for text in [str(p["a"]) for p in pairs] + [m["origin"] for m in mock] + [m["similar"] for m in mock]:
        if text not in asked and text not in real:
            real[text] = len(real)
    stored = list(real)[:entries]
    rng = random.Random(seed)
    seen = set(stored)
    pool = list(real)
    while len(stored) < entries:
        first, second = (text.split() for text in rng.sample(pool, 2))
        text = " ".join(first[: (len(first) + 1) // 2] + second[len(second) // 2:])
        if text not in seen:
            seen.add(text)
            stored.append(text)
    position = {text: i for i, text in enumerate(stored)}
    paraphrases = [(str(p["b"]), position[str(p["a"])]) for p in pairs
                   if p["duplicate"] and str(p["a"]) in position]
    paraphrased = {text for text, _ in paraphrases}
    unseen = sorted({str(p["b"]) for p in pairs if not p["duplicate"]} - paraphrased)
    rng.shuffle(unseen)
    return Corpus(stored=stored, real_count=min(len(real), entries), paraphrases=paraphrases, unseen=unseen)
