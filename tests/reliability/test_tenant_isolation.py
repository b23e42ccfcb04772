"""No answer ever crosses tenants, in either tier: a randomized interleaving of many tenants
asking identical and paraphrased questions (streamed or not, several at once) through a sidecar
with both tiers (Redis, Milvus Lite, the real model).  The test upstream answers each tenant
differently (``tenant_header``), so every answer names the tenant it was made for."""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter, defaultdict
from typing import Any

from tests.sidecar.calls import chat, user
from tests.upstream import TestUpstream, expected_chat

TENANTS = ["alice", "bob", "carol", "dave", "erin", ""]  # "" sends no header: a tenant of its own
#: groups of questions the model finds close (identical words, case, punctuation) or not
QUESTIONS = [
    ["How do I reset my password?", "How do I reset my password", "how do I reset my password?"],
    ["What is my account balance?", "What is my account balance", "what is my account balance?"],
    ["Cancel my subscription please", "Please cancel my subscription", "cancel my subscription please"],
]
REQUESTS = 120
AT_ONCE = 4
SEED = 20261122


async def test_no_answer_crosses_tenants(semantic_sidecar_factory: Any, client_for: Any,
                                         upstream: TestUpstream) -> None:
    upstream.tenant_header = "X-User"
    client = client_for(await semantic_sidecar_factory(tenant_header="X-User"))
    rnd = random.Random(SEED)
    served: dict[str, set[str]] = defaultdict(set)  # tenant -> every answer the upstream made for it
    results: Counter[str] = Counter()

    async def ask(tenant: str, question: str, stream: bool) -> None:
        body = {"model": "test-model", "messages": user(question), "temperature": 0}
        answer = await chat(client, stream=stream, headers={"X-User": tenant} if tenant else None, **body)
        revision = upstream.revision_for(tenant)
        tag = re.match(r"\[rev ([^\]]*)\]", answer.content or "")
        assert tag and tag.group(1) == revision, f"{tenant or 'no tenant'} got {answer.content!r}"
        results[answer.cache] += 1
        if answer.cache in ("miss", "hit-exact"):
            assert answer.content == expected_chat(body, revision)[0]
        if answer.cache == "miss":
            served[tenant].add(answer.content)
        else:
            assert answer.content in served[tenant] or answer.cache == "hit-exact"

    for _ in range(REQUESTS // AT_ONCE):
        batch = [(rnd.choice(TENANTS), rnd.choice(rnd.choice(QUESTIONS)), rnd.random() < 0.3) for _ in range(AT_ONCE)]
        await asyncio.gather(*(ask(*call) for call in batch))

    assert sum(results.values()) == REQUESTS
    assert results["hit-semantic"] > 0 and results["hit-exact"] > 0 and results["miss"] > 0, results
