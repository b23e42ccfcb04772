"""Several sidecar replicas sharing their tiers, under concurrent load through the openai client:
every answer is checked against what the test upstream says for that question and revision."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tests.rollout.conftest import wait_until
from tests.sidecar.calls import HIT, MISS, chat, user
from tests.upstream import expected_chat

#: distinct topics, so that no question is a paraphrase of another (a semantic tier must not
#: answer one with another's answer; that would be a wrong answer here)
QUESTIONS = (
    "How do I reset my password?",
    "What is the boiling point of water at sea level?",
    "Write a haiku about autumn leaves.",
    "Which planet has the most moons?",
    "How many bytes are in a kilobyte?",
    "Translate 'good morning' into Spanish.",
    "Who painted the Mona Lisa?",
    "What does HTTP status 404 mean?",
    "Give me a recipe for pancakes.",
    "How far is the Moon from the Earth?",
    "What is the time complexity of binary search?",
    "Name three primary colors.",
)
CONCURRENCY = 24


def body(question: str) -> dict[str, Any]:
    return {"model": "test-model", "messages": user(question), "temperature": 0}


def expected(question: str, revision: str) -> str:
    return expected_chat(body(question), revision)[0]


@dataclass(frozen=True)
class Served:
    replica: int
    question: str
    cache: str | None
    content: str | None
    #: the request started after every replica had switched and the old entries were deleted
    after_switch: bool


class Fleet:
    def __init__(self, clients: list[Any]) -> None:
        self.clients = clients
        self.served: list[Served] = []
        self.switched = asyncio.Event()
        self._limit = asyncio.Semaphore(CONCURRENCY)

    async def ask(self, replica: int, question: str) -> Served:
        async with self._limit:
            after = self.switched.is_set()
            answer = await chat(self.clients[replica], **body(question))
        served = Served(replica, question, answer.cache, answer.content, after)
        self.served.append(served)
        return served

    async def round(self, rng: random.Random) -> list[Served]:
        """Every question at every replica once, all at the same time, in a random order."""
        pairs = list(itertools.product(range(len(self.clients)), QUESTIONS))
        rng.shuffle(pairs)
        return list(await asyncio.gather(*(self.ask(replica, question) for replica, question in pairs)))

    def wrong(self, revisions: tuple[str, ...]) -> list[Served]:
        """Answers that are not the upstream's answer to their own question under one of
        ``revisions`` (the new revision only, for requests started after the switch)."""
        new = revisions[-1]
        return [served for served in self.served
                if served.content not in {expected(served.question, r) for r in (revisions if not served.after_switch
                                                                                 else (new,))}]


async def check_fleet(clients: list[Any], revisions_of: Callable[[], list[str]],
                      switch: Callable[[], Awaitable[None]], set_upstream_revision: Callable[[str], None]) -> Fleet:
    """The shared scenario: load on revision A, a hit stored by one replica served by the
    others, then a switch to B (``switch`` announces it and deletes A's entries) while the load
    goes on; returns the fleet for backend-specific checks."""
    rng = random.Random(7)
    fleet = Fleet(clients)
    for _ in range(3):
        await fleet.round(rng)
    assert fleet.wrong(("A",)) == []
    assert sum(served.cache != MISS for served in fleet.served) >= len(fleet.served) // 2, "the replicas share hits"

    stored = await fleet.ask(0, "Asked first at replica zero?")
    assert stored.cache == MISS
    for replica in range(1, len(clients)):
        served = await fleet.ask(replica, "Asked first at replica zero?")
        assert (served.cache, served.content) == (HIT, stored.content), f"replica {replica}"

    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            await fleet.round(rng)

    background = asyncio.create_task(load())
    await fleet.round(rng)
    set_upstream_revision("B")  # the Service points at the new pods before the event (as in a rollout)
    await switch()
    await wait_until(lambda: revisions_of() == ["rev-b"] * len(clients), what="every replica on rev-b")
    fleet.switched.set()
    for _ in range(2):
        await fleet.round(rng)
    stop.set()
    await background
    assert fleet.wrong(("A", "B")) == [], "a wrong answer, or an old-revision answer after the switch"
    after = [served for served in fleet.served if served.after_switch]
    assert len(after) >= 2 * len(clients) * len(QUESTIONS)
    assert any(served.cache == HIT for served in after), "revision B answers are cached and shared again"
    return fleet
