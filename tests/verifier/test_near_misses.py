"""The packaged verifier with the packaged model, at the default target precision: hand-written
near misses (another number, date, negation, name, a reversed relation) are refused although
their cosine is high; faithful paraphrases are served.  (The measured rates on thousands of
rule-made pairs are in docs/benchmarks.md; these examples were written for this test, not taken
from the training data.)"""

from __future__ import annotations

import numpy as np
import pytest

from llmcache_sidecar.config import load_settings
from llmcache_sidecar.default_model import MODEL_SHA256, default_model_files
from llmcache_sidecar.embedder import OnnxEmbedder
from llmcache_sidecar.verifier import MatchPolicy, match_policy

NEAR_MISSES = [
    ("number", "How many calories are in 100 grams of rice?", "How many calories are in 250 grams of rice?"),
    ("number", "Can I run Windows 10 on 4 GB of RAM?", "Can I run Windows 10 on 2 GB of RAM?"),
    ("number", "What are 5 tips for a job interview?", "What are six tips for a job interview?"),  # in words
    ("date", "What is the weather like in Rome in July?", "What is the weather like in Rome in December?"),
    ("negation", "Is it safe to drink tap water in Paris?", "Is it not safe to drink tap water in Paris?"),
    ("negation", "Why do cats purr when they are happy?", "Why don't cats purr when they are happy?"),
    ("negation", "Why does my phone charge slowly?", "Why doesnt my phone charge slowly?"),  # typed without apostrophe
    ("entity", "Who is the CEO of Google?", "Who is the CEO of Microsoft?"),
    ("relation", "How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?"),
    ("relation", "How do I move from India to Canada?", "How do I move from Canada to India?"),
    ("relation", "Are cats afraid of dogs?", "Are dogs afraid of cats?"),
]
PARAPHRASES = [
    ("How do I convert Celsius to Fahrenheit?", "How can I convert Celsius to Fahrenheit?"),
    ("What is the best way to learn Python?", "What's the best way to learn Python?"),
    ("How do I reset my password?", "how do i reset my password"),
    ("What are some good books to read?", "What are a few good books to read?"),
    # every word moves, the meaning stays: a swap across "and" / "or" is not a reversed relation
    ("What is the difference between a virus and a bacterium?", "What is the difference between a bacterium and a virus?"),
    ("Should I learn Python or Java first?", "Should I learn Java or Python first?"),
    # typed without apostrophes
    ("Why doesn't my phone charge when it is cold?", "Why doesnt my phone charge when it is cold?"),
    ("What is the world's tallest building?", "What is the worlds tallest building?"),
    # a number in words, British spelling
    ("What are 5 tips for a job interview?", "What are five tips for a job interview?"),
    ("How do I change the colour of my favourite app icon?", "How do I change the color of my favorite app icon?"),
]


@pytest.fixture(scope="module")
def judged() -> tuple[OnnxEmbedder, MatchPolicy]:
    policy = match_policy(load_settings({"LLMCACHE_UPSTREAM_URL": "http://up:8000"}), MODEL_SHA256)
    assert policy.verifier is not None
    return OnnxEmbedder(default_model_files(), "cpu"), policy


def probability(judged: tuple[OnnxEmbedder, MatchPolicy], stored: str, asked: str) -> tuple[float, float]:
    embedder, policy = judged
    u, v = embedder.embed([stored, asked])
    assert policy.verifier is not None
    return float(u @ v), float(policy.verifier.probability([stored], [asked], u[None], v[None])[0])


@pytest.mark.parametrize(("kind", "stored", "asked"), NEAR_MISSES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(NEAR_MISSES)])
def test_near_miss_refused(judged: tuple[OnnxEmbedder, MatchPolicy], kind: str, stored: str, asked: str) -> None:
    cosine, p = probability(judged, stored, asked)
    assert p < judged[1].cut, f"{kind}: probability {p:.3f} >= cut {judged[1].cut:.3f} (cosine {cosine:.3f})"


@pytest.mark.parametrize(("stored", "asked"), PARAPHRASES)
def test_paraphrase_served(judged: tuple[OnnxEmbedder, MatchPolicy], stored: str, asked: str) -> None:
    cosine, p = probability(judged, stored, asked)
    assert p >= judged[1].cut, f"probability {p:.3f} < cut {judged[1].cut:.3f} (cosine {cosine:.3f})"


def test_near_misses_are_above_the_cosine_threshold_mostly(judged: tuple[OnnxEmbedder, MatchPolicy]) -> None:
    """Why the verifier is needed: most of these near misses pass the plain threshold."""
    cosines = np.array([probability(judged, s, a)[0] for _, s, a in NEAR_MISSES])
    assert (cosines >= judged[1].threshold).mean() >= 0.5
