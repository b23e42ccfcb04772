"""The rule-made training pairs: a swap across "and" / "or" is a duplicate, never a near miss."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")  # verifier_training is the tune extra's module

from llmcache_sidecar.verifier_training import rule_pairs  # noqa: E402

QUESTIONS = [
    "What is the difference between Python and Java?",
    "How do I move from India to Canada?",
    "Which is better for a beginner, Python or Java?",
    "How do I learn stock market and mutual funds?",
    "Can I control my emotions and actions?",
]


def made(kind: str) -> dict[str, tuple[str, bool]]:
    return {p.stored: (p.asked, p.duplicate) for k, p in rule_pairs(QUESTIONS, per_kind=10) if k == kind}


def test_relation_near_misses_swap_across_other_words_only() -> None:
    relations = made("relation")
    assert relations["How do I move from India to Canada?"] == ("How do I move from Canada to India?", False)
    assert "What is the difference between Python and Java?" not in relations  # "Java and Python": the same
    assert "Which is better for a beginner, Python or Java?" not in relations


def test_conjunct_swaps_are_duplicates() -> None:
    swaps = made("conjuncts")
    assert swaps["What is the difference between Python and Java?"] == (
        "What is the difference between Java and Python?", True)
    assert swaps["Can I control my emotions and actions?"] == ("Can I control my actions and emotions?", True)
    assert swaps["Which is better for a beginner, Python or Java?"] == (
        "Which is better for a beginner, Java or Python?", True)
    # "market and mutual" are not the two sides of the "and": no swap (it would be a scramble)
    assert "How do I learn stock market and mutual funds?" not in swaps
