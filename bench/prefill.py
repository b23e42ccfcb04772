"""Fill both tiers with N answered questions before the sidecar starts, as its misses would have.

Sending 100,000 misses through the sidecar would cost the time of 100,000 embeddings; the
vectors are already cached (:mod:`bench.vectors`), so this writes what a miss writes, with the
product's own code: the key and scope from :class:`~llmcache_sidecar.keys.KeyBuilder`, the value
from :class:`~llmcache_sidecar.entry.Entry` holding the test upstream's answer, the Milvus row
from :class:`~llmcache_sidecar.tiers.milvus_store.MilvusStore`.  The sidecar then loads the
collection at start-up like any restart does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import orjson
import redis

from tests.upstream import chat_completion

CHAT_PATH = "/v1/chat/completions"
SYSTEM_PROMPT = "You are a helpful assistant. Answer in a few sentences."
REVISION = "default"  # the sidecar's default LLMCACHE_MODEL_REVISION
UPSTREAM_REVISION = "A"  # the test upstream's default revision
MILVUS_BATCH = 2000


def chat_body(question: str, *, stream: bool = False) -> dict[str, Any]:
    """The benchmark's request: one system prompt, one user question, greedy decoding."""
    body: dict[str, Any] = {"model": "test-model", "temperature": 0, "max_tokens": 64,
                            "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                         {"role": "user", "content": question}]}
    if stream:
        body["stream"] = True
    return body


def prefill(questions: list[str], vectors: np.ndarray, *, cache_name: str, redis_url: str, milvus_uri: str,
            ttl_seconds: int) -> dict[str, float]:
    """Write every question's answer to Redis and its vector to Milvus Lite; return timings."""
    from llmcache_sidecar.config import Settings
    from llmcache_sidecar.entry import Entry
    from llmcache_sidecar.keys import KeyBuilder

    keys = KeyBuilder(Settings(upstream_url="http://127.0.0.1:1", cache_name=cache_name))
    now = time.time()
    started = time.perf_counter()
    client = redis.Redis.from_url(redis_url)
    rows: list[tuple[str, str, str]] = []  # (key, scope, question)
    pipe = client.pipeline(transaction=False)
    for number, question in enumerate(questions):
        body = chat_body(question)
        parsed = keys.parse("chat", orjson.dumps(body), CHAT_PATH, {}, REVISION, semantic=True)
        assert parsed.cache is not None
        answer = chat_completion(body, UPSTREAM_REVISION, int(now))
        pipe.set(parsed.cache.exact_key, Entry.from_answer("chat", answer, now).encode(), ex=ttl_seconds)
        rows.append((parsed.cache.exact_key, parsed.cache.scope, question))
        if number % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    client.close()
    redis_seconds = time.perf_counter() - started
    started = time.perf_counter()
    asyncio.run(_write_milvus(rows, vectors, cache_name=cache_name, uri=milvus_uri, now=now, ttl=ttl_seconds))
    return {"redis_seconds": round(redis_seconds, 1), "milvus_seconds": round(time.perf_counter() - started, 1)}


async def _write_milvus(rows: list[tuple[str, str, str]], vectors: np.ndarray, *, cache_name: str, uri: str, now: float,
                        ttl: int) -> None:
    from milvus_lite.server_manager import server_manager_instance

    from llmcache_sidecar.tiers.milvus_store import MilvusStore
    from llmcache_sidecar.tiers.vector_index import IndexEntry

    store = MilvusStore(uri, cache_name, vectors.shape[1])
    await store.connect()
    try:
        for start in range(0, len(rows), MILVUS_BATCH):
            await store.upsert([IndexEntry(key, vectors[start + i], REVISION, "", scope, now, now + ttl, text)
                                for i, (key, scope, text) in enumerate(rows[start:start + MILVUS_BATCH])])
    finally:
        await store.aclose()
        server_manager_instance.release_server(uri)  # the sidecar process opens the file next
