"""The semantic tier on real Milvus Lite (embedded, and as a server on a port) with the real model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from llmcache_sidecar.embedder import BatchingEmbedder, OnnxEmbedder
from llmcache_sidecar.tiers.base import CacheRequest
from llmcache_sidecar.tiers.milvus_store import MilvusError, MilvusStore, collection_name
from llmcache_sidecar.tiers.semantic import MilvusSemanticTier, SemanticOptions
from tests.semantic.conftest import MilvusServer

QUESTION = "How do I reset my password?"
PARAPHRASE = "I forgot my password, how can I reset it?"
UNRELATED = "What is the capital of France?"
FAST = {"tick_seconds": 0.05, "refresh_seconds": 0.1, "purge_seconds": 0.1}


def request(cache: str, query: str, *, revision: str = "r1", tenant: str = "", scope: str = "s1") -> CacheRequest:
    return CacheRequest(cache, revision, tenant, scope, query,
                        f"llmcache:{cache}:{revision}:{tenant}:e:{abs(hash((query, scope))):x}")


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await check()
            if result:
                return result
        except MilvusError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


@pytest.fixture
def open_tier(onnx_embedder: OnnxEmbedder, cache_name: str) -> Callable[..., Any]:
    @asynccontextmanager
    async def make(uri: str, *, clock: Callable[[], float] = time.time, name: str = cache_name,
                   **options: Any) -> AsyncIterator[MilvusSemanticTier]:
        batcher = BatchingEmbedder(onnx_embedder)
        tier = MilvusSemanticTier(batcher, MilvusStore(uri, name, onnx_embedder.dim),
                                  SemanticOptions(threshold=0.8, ttl_seconds=options.pop("ttl_seconds", 3600), **options),
                                  clock=clock)
        await tier.start()
        try:
            await asyncio.wait_for(tier.wait_loaded(), 30)
            yield tier
        finally:
            await tier.aclose()
            await batcher.aclose()

    return make


async def test_paraphrase_found_and_entries_survive_a_restart(open_tier: Callable[..., Any], milvus_lite_path: str,
                                                              cache_name: str) -> None:
    async with open_tier(milvus_lite_path) as tier:
        assert await tier.lookup(request(cache_name, PARAPHRASE)) is None
        stored = request(cache_name, QUESTION)
        await tier.store(stored)
        match = await tier.lookup(request(cache_name, PARAPHRASE))
        assert match is not None and match.key == stored.exact_key and 0.8 <= match.similarity < 1.0
        assert await tier.lookup(request(cache_name, UNRELATED)) is None
        await tier.flush()
        assert await tier.milvus.count() == 1
    async with open_tier(milvus_lite_path) as reopened:  # a new process would do the same
        assert await reopened.count() == 1
        match = await reopened.lookup(request(cache_name, PARAPHRASE))
        assert match is not None and match.key == stored.exact_key


async def test_no_match_across_revision_tenant_or_scope(open_tier: Callable[..., Any], milvus_lite_path: str,
                                                        cache_name: str) -> None:
    async with open_tier(milvus_lite_path) as tier:
        await tier.store(request(cache_name, QUESTION, revision="r1", tenant="alice", scope="s1"))
        assert await tier.lookup(request(cache_name, PARAPHRASE, revision="r1", tenant="alice", scope="s1"))
        assert await tier.lookup(request(cache_name, PARAPHRASE, revision="r2", tenant="alice", scope="s1")) is None
        assert await tier.lookup(request(cache_name, PARAPHRASE, revision="r1", tenant="bob", scope="s1")) is None
        assert await tier.lookup(request(cache_name, PARAPHRASE, revision="r1", tenant="alice", scope="s2")) is None


async def test_ttl_honoured_on_read_and_purged_from_milvus(open_tier: Callable[..., Any], milvus_lite_path: str,
                                                           cache_name: str) -> None:
    now = [time.time()]
    async with open_tier(milvus_lite_path, clock=lambda: now[0], ttl_seconds=60, **FAST) as tier:
        await tier.store(request(cache_name, QUESTION))
        await tier.flush()
        assert await tier.lookup(request(cache_name, PARAPHRASE))
        now[0] += 61
        assert await tier.lookup(request(cache_name, PARAPHRASE)) is None
        await eventually(lambda: _is(tier.milvus.count(), 0))
        assert await tier.count() == 0


async def _is(awaitable: Any, value: Any) -> bool:
    return await awaitable == value


async def test_invalidate_by_revision_tenant_and_all(open_tier: Callable[..., Any], milvus_lite_path: str,
                                                     cache_name: str) -> None:
    async with open_tier(milvus_lite_path) as tier:
        for revision, tenant in [("r1", "a"), ("r1", 'b"quoted\\'), ("r2", "a"), ("r2", "c")]:
            await tier.store(request(cache_name, QUESTION, revision=revision, tenant=tenant))
        assert await tier.invalidate(revision="r1") == 2
        assert await tier.lookup(request(cache_name, PARAPHRASE, revision="r1", tenant="a")) is None
        assert await tier.lookup(request(cache_name, PARAPHRASE, revision="r2", tenant="a"))
        assert await tier.milvus.count() == 2
        assert await tier.invalidate(tenant="a") == 1
        assert await tier.lookup(request(cache_name, PARAPHRASE, revision="r2", tenant="a")) is None
        assert await tier.invalidate() == 1
        assert await tier.count() == 0 and await tier.milvus.count() == 0


async def test_replicas_see_each_others_entries_through_a_milvus_server(
        open_tier: Callable[..., Any], milvus_server: MilvusServer, cache_name: str) -> None:
    async with open_tier(milvus_server.uri, **FAST) as one, open_tier(milvus_server.uri, **FAST) as two:
        stored = request(cache_name, QUESTION)
        await one.store(stored)
        match = await eventually(lambda: two.lookup(request(cache_name, PARAPHRASE)))
        assert match.key == stored.exact_key


async def test_milvus_outage_raises_then_recovers_with_its_data(
        open_tier: Callable[..., Any], milvus_server: MilvusServer, cache_name: str) -> None:
    async with open_tier(milvus_server.uri, **FAST) as tier:
        kept = request(cache_name, QUESTION, revision="r1")
        dropped = request(cache_name, QUESTION, revision="old")
        await tier.store(kept)
        await tier.store(dropped)
        await tier.flush()
        milvus_server.stop()
        await eventually(lambda: _raises(tier.lookup(request(cache_name, PARAPHRASE))))
        with pytest.raises(MilvusError):
            await tier.store(request(cache_name, UNRELATED))
        with pytest.raises(MilvusError):  # remembered, applied when Milvus is back
            await tier.invalidate(revision="old")
        milvus_server.start()
        match = await eventually(lambda: tier.lookup(request(cache_name, PARAPHRASE, revision="r1")))
        assert match.key == kept.exact_key
        assert await tier.lookup(request(cache_name, PARAPHRASE, revision="old")) is None
        assert await tier.milvus.count() == 1


async def _raises(awaitable: Any) -> bool:
    try:
        await awaitable
    except MilvusError:
        return True
    return False


def test_collection_names_are_valid_milvus_names() -> None:
    assert collection_name("my-cache.v2") == "llmcache_my_cache_v2"


async def test_a_collection_of_another_embedding_model_is_refused(milvus_lite_path: str, cache_name: str) -> None:
    """Switching LLMCACHE_EMBEDDING_MODEL on a cache must not compare new questions with vectors
    another model made: the collection is refused (the tier stays off) until it is dropped."""
    first = MilvusStore(milvus_lite_path, cache_name, 4, model="a" * 64)
    await first.connect()
    await first.aclose()
    for dim, model in ((4, "b" * 64), (8, "a" * 64)):
        other = MilvusStore(milvus_lite_path, cache_name, dim, model=model)
        with pytest.raises(MilvusError, match="another embedding model"):
            await other.connect()
        await other.aclose()
    same = MilvusStore(milvus_lite_path, cache_name, 4, model="a" * 64)
    await same.connect()
    await same.aclose()
