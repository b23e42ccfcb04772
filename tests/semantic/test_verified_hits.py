"""Verified semantic hits (issue 9): the match verifier refuses a near miss the cosine threshold
would serve, and serves a paraphrase; a collection made before the question text was stored
degrades to the cosine threshold.  Real model, real Redis, Milvus Lite, the official openai
client through the real sidecar."""

from __future__ import annotations

import time
from typing import Any

from llmcache_sidecar import state
from llmcache_sidecar.config import load_settings
from llmcache_sidecar.default_model import MODEL_SHA256
from llmcache_sidecar.embedder import BatchingEmbedder, OnnxEmbedder
from llmcache_sidecar.tiers.milvus_store import TEXT_FIELD, MilvusStore, collection_name
from llmcache_sidecar.tiers.semantic import MilvusSemanticTier, SemanticOptions
from llmcache_sidecar.verifier import match_policy
from tests.semantic.test_milvus_tier import request
from tests.sidecar.calls import MISS, chat, user
from tests.upstream import TestUpstream, expected_chat

SEMANTIC = "hit-semantic"
STORED = "How do I convert Celsius to Fahrenheit?"
PARAPHRASE = "How can I convert Celsius to Fahrenheit?"
#: cosine 0.995 to STORED with the packaged model: far above the 0.93 threshold
REVERSED = "How do I convert Fahrenheit to Celsius?"
NEAR_MISSES = ["Is it not safe to drink tap water in Paris?", "What is the population of India in 2017?"]
NEAR_MISS_SOURCES = ["Is it safe to drink tap water in Paris?", "What is the population of India in 2016?"]


def body(question: str) -> dict[str, Any]:
    return {"model": "test-model", "messages": user(question), "temperature": 0}


async def test_verifier_refuses_a_near_miss_the_threshold_serves_and_serves_a_paraphrase(
        semantic_sidecar_factory: Any, client_for: Any, upstream: TestUpstream) -> None:
    handle = await semantic_sidecar_factory()
    assert handle.app[state.SEMANTIC_TIER].options.policy.verifier is not None, "the verifier is on by default"
    client = client_for(handle)
    for question in [STORED, *NEAR_MISS_SOURCES]:
        assert (await chat(client, **body(question))).cache == MISS
    reversed_ = await chat(client, **body(REVERSED))
    assert reversed_.cache == MISS, "a reversed relation must not get the stored answer"
    for near_miss in NEAR_MISSES:
        assert (await chat(client, **body(near_miss))).cache == MISS, near_miss
    served = await chat(client, **body(PARAPHRASE))
    assert served.cache == SEMANTIC
    assert served.content == expected_chat(body(STORED))[0], "the stored question's answer is served"
    assert float(served.headers["x-llmcache-similarity"]) > 0.9


async def test_without_the_verifier_the_threshold_serves_the_near_miss(semantic_sidecar_factory: Any,
                                                                        client_for: Any) -> None:
    """The control of the test above: the reversed question is above the cosine threshold."""
    client = client_for(await semantic_sidecar_factory(verifier="off"))
    assert (await chat(client, **body(STORED))).cache == MISS
    wrong = await chat(client, **body(REVERSED))
    assert wrong.cache == SEMANTIC and float(wrong.headers["x-llmcache-similarity"]) >= 0.93


def _old_collection(uri: str, cache: str, dim: int) -> None:
    """A collection with the schema before the question text was stored."""
    from milvus_lite.server_manager import server_manager_instance
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=server_manager_instance.start_and_get_uri(uri))
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=2048)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    for name in ("revision", "tenant", "scope"):
        schema.add_field(name, DataType.VARCHAR, max_length=512)
    schema.add_field("created_at", DataType.DOUBLE)
    schema.add_field("expires_at", DataType.DOUBLE)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="IP")
    client.create_collection(collection_name(cache), schema=schema, index_params=index)
    client.close()


async def test_old_collection_without_text_degrades_to_the_cosine_threshold(
        onnx_embedder: OnnxEmbedder, milvus_lite_path: str, cache_name: str) -> None:
    _old_collection(milvus_lite_path, cache_name, onnx_embedder.dim)
    policy = match_policy(load_settings({"LLMCACHE_UPSTREAM_URL": "http://up:8000"}), MODEL_SHA256)
    assert policy.verifier is not None

    async def tier_session(questions: list[str], asked: str) -> tuple[bool, Any]:
        batcher = BatchingEmbedder(onnx_embedder)
        store = MilvusStore(milvus_lite_path, cache_name, onnx_embedder.dim)
        tier = MilvusSemanticTier(batcher, store, SemanticOptions(threshold=0.93, ttl_seconds=3600, policy=policy))
        await tier.start()
        try:
            await tier.wait_loaded()
            for question in questions:
                await tier.store(request(cache_name, question))
            await tier.flush()
            return store.has_text, await tier.lookup(request(cache_name, asked))
        finally:
            await tier.aclose()
            await batcher.aclose()

    has_text, match = await tier_session([STORED], REVERSED)
    assert not has_text, "Milvus Lite cannot add a field: the store runs without text"
    # no text to verify: the old behaviour (cosine >= threshold serves), never an error
    assert match is not None and match.key == request(cache_name, STORED).exact_key
    # after a restart the rows are read back (without the field) and decided the same way
    has_text, match = await tier_session([], PARAPHRASE)
    assert not has_text and match is not None and match.similarity >= 0.93
    started = time.monotonic()
    has_text, match = await tier_session([], "What is the capital of France?")
    assert match is None and time.monotonic() - started < 60


async def test_new_collection_stores_the_question_text(onnx_embedder: OnnxEmbedder, milvus_lite_path: str,
                                                       cache_name: str) -> None:
    batcher = BatchingEmbedder(onnx_embedder)
    store = MilvusStore(milvus_lite_path, cache_name, onnx_embedder.dim)
    tier = MilvusSemanticTier(batcher, store, SemanticOptions(threshold=0.93, ttl_seconds=3600))
    await tier.start()
    try:
        await tier.wait_loaded()
        await tier.store(request(cache_name, STORED))
        await tier.flush()
        assert store.has_text
        rows = await store.read("expires_at > 0")
        assert [row.text for row in rows] == [STORED]
        assert TEXT_FIELD == "query"
    finally:
        await tier.aclose()
        await batcher.aclose()
