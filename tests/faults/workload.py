"""What the fault suite asks, and how every answer is judged.

The load mixes exact repeats (exact hits), paraphrases of a few questions (semantic hits: each
group's members embed at cosine >= 0.9 with each other and <= 0.3 with any other group's) and
new questions made of random words (misses; at most 0.7 apart from each other), on both cacheable
endpoints, streamed and not, with and without ``max_tokens``.

Every answer is checked against the deterministic test upstream (:mod:`tests.upstream`): an
exact hit, a miss and a pass-through must be exactly what the upstream says to that request; a
semantic hit must be what it says to a request of the same paraphrase group with the same
parameters (an answer to another question is a *wrong answer*).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.upstream import expected_chat, expected_completion

Kind = Literal["chat", "completions"]
PATHS: dict[Kind, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
MODEL = "test-model"
#: the header that carries a call's id through the sidecar to the upstream's request log
REQUEST_ID_HEADER = "X-Request-Id"

PARAPHRASE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("What is the capital of France?", "What's the capital of France?", "Tell me the capital of France."),
    ("How do I reverse a list in Python?", "How can I reverse a list in Python?", "how do i reverse a python list",
     "How to reverse a list in Python?"),
    ("What is the boiling point of water at sea level?", "What's the boiling point of water at sea level?",
     "At sea level, what is the boiling point of water?", "boiling point of water at sea level?"),
    ("Who wrote the novel Pride and Prejudice?", "Who is the author of Pride and Prejudice?",
     "Who wrote Pride and Prejudice?"),
    ("How many legs does a spider have?", "How many legs do spiders have?", "how many legs does a spider have",
     "A spider has how many legs?"),
    ("What causes the seasons on Earth?", "What causes Earth's seasons?", "What is the cause of the seasons on Earth?"),
    ("How do I make a cup of green tea?", "how to make green tea", "What is the way to make a cup of green tea?"),
    ("What is the speed of light in vacuum?", "What's the speed of light in a vacuum?", "speed of light in vacuum"),
)



def new_question_words() -> list[str]:
    """Whole English words of the default embedding model's vocabulary (about 18,000): four of
    them make a new question that is never a paraphrase of another (cosine <= 0.7 measured)."""
    from llmcache_sidecar.default_model import default_model_files

    vocab = json.loads(default_model_files().tokenizer.read_text())["model"]["vocab"]
    return sorted(word for word in vocab if word.isascii() and word.isalpha() and len(word) >= 5)


@dataclass(frozen=True)
class Call:
    """One request of the load."""

    id: str
    kind: Kind
    #: the body without the transport fields (``stream``, ``stream_options``)
    body: dict[str, Any]
    stream: bool
    #: the paraphrase group of the question (a new question is a group of its own)
    group: str
    #: why it was sent: repeat | paraphrase | new | probe | reread
    origin: str

    @property
    def question(self) -> str:
        return question_of(self.kind, self.body)

    def signature(self) -> str:
        """What makes two calls the same request for the cache (kind and body)."""
        return self.kind + json.dumps(self.body, sort_keys=True)


def question_of(kind: Kind, body: dict[str, Any]) -> str:
    if kind == "chat":
        return str(body["messages"][-1]["content"])
    return str(body["prompt"])


def with_question(kind: Kind, body: dict[str, Any], question: str) -> dict[str, Any]:
    if kind == "chat":
        return {**body, "messages": [*body["messages"][:-1], {"role": "user", "content": question}]}
    return {**body, "prompt": question}


def expected(kind: Kind, body: dict[str, Any]) -> tuple[str, str]:
    """``(content, finish_reason)`` the test upstream answers ``body`` with (revision A)."""
    return expected_chat(body) if kind == "chat" else expected_completion(body)


@dataclass
class Workload:
    """Makes calls (seeded, so a run can be repeated) and remembers every question's group."""

    seed: int = 7
    repeat_share: float = 0.35
    paraphrase_share: float = 0.35
    stream_share: float = 0.5
    completions_share: float = 0.2
    _rng: random.Random = field(init=False, repr=False)
    _ids: Iterator[int] = field(init=False, repr=False)
    _groups: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _members: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)
    _sent: list[Call] = field(default_factory=list, init=False, repr=False)
    _words: list[str] = field(default_factory=new_question_words, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._ids = iter(range(1, 1 << 62))
        for number, members in enumerate(PARAPHRASE_GROUPS):
            for question in members:
                self.join(f"g{number}", question)

    def join(self, group: str, question: str) -> None:
        """Count ``question`` as a member of ``group`` (its answer may serve the others)."""
        self._groups[question] = group
        self._members.setdefault(group, []).append(question)

    def group_of(self, question: str) -> str:
        return self._groups.get(question, question)

    def members(self, group: str) -> list[str]:
        return self._members.get(group, [group])

    # -- making calls ------------------------------------------------------------------------

    def make(self, kind: Kind, question: str, *, stream: bool, origin: str, max_tokens: int | None = None) -> Call:
        body: dict[str, Any] = {"model": MODEL, "temperature": 0}
        if kind == "chat":
            body["messages"] = [{"role": "user", "content": question}]
        else:
            body["prompt"] = question
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return self._call(kind, body, stream, origin)

    def again(self, call: Call, *, stream: bool, origin: str) -> Call:
        """The same request as ``call`` (streamed or not: both share one cache entry)."""
        return self._call(call.kind, call.body, stream, origin)

    def _call(self, kind: Kind, body: dict[str, Any], stream: bool, origin: str) -> Call:
        question = question_of(kind, body)
        call = Call(id=f"c{next(self._ids)}", kind=kind, body=body, stream=stream, group=self.group_of(question),
                    origin=origin)
        self._sent.append(call)
        return call

    def next(self) -> Call:
        """The next call of the mix."""
        rng = self._rng
        stream = rng.random() < self.stream_share
        draw = rng.random()
        if draw < self.repeat_share and self._sent:
            return self.again(rng.choice(self._sent), stream=stream, origin="repeat")
        kind: Kind = "completions" if rng.random() < self.completions_share else "chat"
        max_tokens = rng.choice((None, None, 12))
        if draw < self.repeat_share + self.paraphrase_share:
            question = rng.choice(rng.choice(PARAPHRASE_GROUPS))
            return self.make(kind, question, stream=stream, origin="paraphrase", max_tokens=max_tokens)
        a, b, c, d = rng.sample(self._words, 4)
        question = f"What links {a}, {b}, {c} and {d}?"
        return self.make(kind, question, stream=stream, origin="new", max_tokens=max_tokens)

    def distinct(self) -> list[Call]:
        """One call per distinct request sent so far (first seen first)."""
        seen: dict[str, Call] = {}
        for call in self._sent:
            seen.setdefault(call.signature(), call)
        return list(seen.values())

    # -- judging answers ---------------------------------------------------------------------

    def acceptable(self, call: Call, cache: str | None) -> set[tuple[str, str]]:
        """The ``(content, finish_reason)`` pairs that are right for ``call`` answered as ``cache``."""
        if cache != "hit-semantic":
            return {expected(call.kind, call.body)}
        return {expected(call.kind, with_question(call.kind, call.body, q)) for q in self.members(call.group)}
