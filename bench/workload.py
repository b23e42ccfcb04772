"""Request bodies for each phase of the benchmark, from the corpus (:mod:`bench.corpus`).

The *mixed* phase is what an application's traffic looks like to the cache: a catalogue of
questions, a third each stored questions (exact hits), paraphrases of stored questions (semantic
hits, or misses when the model does not find them similar enough) and questions never seen
(misses the first time, exact hits once their answer is stored), asked with Zipf-like
popularity: the question of rank r is picked with probability proportional to 1 / r^s.

The single-kind phases each take questions no earlier phase asked, so a miss phase only misses
and a semantic phase pays for every embedding (the sidecar keeps the vectors of its last 1,024
queries: a question asked again would skip the embedding).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

from bench.corpus import Corpus
from bench.prefill import chat_body


@dataclass(frozen=True)
class Workload:
    mixed: list[bytes]
    exact: list[bytes]
    semantic: list[bytes]
    miss: list[bytes]
    miss_stream: list[bytes]
    direct: list[bytes]
    direct_stream: list[bytes]


def encode(question: str, *, stream: bool = False) -> bytes:
    return orjson.dumps(chat_body(question, stream=stream))


def zipf_ranks(count: int, catalogue: int, exponent: float, rng: random.Random) -> list[int]:
    weights = [1 / (rank + 1) ** exponent for rank in range(catalogue)]
    return rng.choices(range(catalogue), weights=weights, k=count)


def respaced(texts: list[str], count: int) -> list[str]:
    """``count`` questions from ``texts``; beyond ``len(texts)``, the same questions again with
    trailing spaces: the model sees the same tokens (the same vector, the same hit), the sidecar
    a new request that it must embed again."""
    return [texts[number % len(texts)] + " " * (number // len(texts)) for number in range(count)]


def build_workload(corpus: Corpus, *, mixed: int, catalogue: int, exact: int, semantic: int, miss: int,
                   similar: set[str], exponent: float = 1.0, seed: int = 10) -> Workload:
    """``similar``: the paraphrases whose stored question is above the hit threshold (the
    semantic phase asks only those: a paraphrase below it is a miss, measured by the miss phase)."""
    rng = random.Random(seed)
    paraphrases = [text for text, _ in corpus.paraphrases]
    rng.shuffle(paraphrases)
    hitting = [text for text in paraphrases if text in similar]
    missing = [text for text in paraphrases if text not in similar]
    unseen = list(corpus.unseen)
    third = max(3, catalogue // 3)
    # mixed: paraphrases in their natural mix of hits and misses, and unseen questions; the
    # single-kind phases get the rest
    share = max(1, round(third * len(hitting) / max(1, len(paraphrases))))
    mixed_paraphrases = hitting[:share] + missing[:third - share]
    rest_hitting = hitting[share:] or hitting or paraphrases
    mixed_unseen, rest_unseen = unseen[:third], unseen[third:] or unseen
    stored = [corpus.stored[i] for i in rng.sample(range(corpus.real_count), min(third, corpus.real_count))]
    # the three most popular questions are one of each kind (so a short run sees every kind);
    # below them, popularity is independent of kind
    top = [stored.pop(), mixed_paraphrases.pop(0), mixed_unseen.pop()]
    items = stored + mixed_paraphrases + mixed_unseen
    rng.shuffle(items)
    items = top + items
    mixed_bodies = [encode(items[rank]) for rank in zipf_ranks(mixed, len(items), exponent, rng)]
    exact_pool = corpus.stored[:corpus.real_count]
    exact_bodies = [encode(exact_pool[i % len(exact_pool)]) for i in range(exact)]
    semantic_bodies = [encode(q) for q in respaced(rest_hitting, semantic)]
    # four miss-like phases, each with questions of its own (a question asked again would hit)
    miss = min(miss, len(rest_unseen) // 4)
    misses = rest_unseen[:4 * miss]
    return Workload(
        mixed=mixed_bodies, exact=exact_bodies, semantic=semantic_bodies,
        miss=[encode(q) for q in misses[0:miss]],
        miss_stream=[encode(q, stream=True) for q in misses[miss:2 * miss]],
        direct=[encode(q) for q in misses[2 * miss:3 * miss]],
        direct_stream=[encode(q, stream=True) for q in misses[3 * miss:4 * miss]],
    )
