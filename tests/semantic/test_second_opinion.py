"""The verifier's second opinion in the semantic tier (``llmcache tune --crossencoder``): a
candidate the verifier accepts is served only when the stacked score of verifier and
cross-encoder reaches its cut, and the cross-encoder is not asked below the verifier's gate.
Real model, the packaged verifier, a cross-encoder trained by ``llmcache tune``, Milvus Lite."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from llmcache_sidecar.config import load_settings
from llmcache_sidecar.default_model import MODEL_SHA256
from llmcache_sidecar.embedder import BatchingEmbedder, OnnxEmbedder
from llmcache_sidecar.tiers.base import SemanticMatch
from llmcache_sidecar.tiers.milvus_store import MilvusStore
from llmcache_sidecar.tiers.semantic import MilvusSemanticTier, SemanticOptions
from llmcache_sidecar.verifier import MatchPolicy, load_verifier, match_policy
from tests.semantic.test_milvus_tier import request
from tests.semantic.test_verified_hits import PARAPHRASE, STORED

pytestmark = pytest.mark.slow


async def lookup_with(policy: MatchPolicy, embedder: OnnxEmbedder, milvus_path: str, cache: str) -> SemanticMatch | None:
    """Store STORED, ask PARAPHRASE, with ``policy`` deciding."""
    batcher = BatchingEmbedder(embedder)
    tier = MilvusSemanticTier(batcher, MilvusStore(milvus_path, cache, embedder.dim),
                              SemanticOptions(threshold=policy.threshold, ttl_seconds=3600, policy=policy))
    await tier.start()
    try:
        await tier.wait_loaded()
        await tier.store(request(cache, STORED))
        await tier.flush()
        return await tier.lookup(request(cache, PARAPHRASE))
    finally:
        await tier.aclose()
        await batcher.aclose()


async def test_the_stacked_score_decides_a_candidate_the_verifier_accepts(
        tuned_with_crossencoder: tuple[Path, Path, str], onnx_embedder: OnnxEmbedder, milvus_lite_path: str,
        cache_name: str) -> None:
    packaged = match_policy(load_settings({"LLMCACHE_UPSTREAM_URL": "http://up:8000"}), MODEL_SHA256)
    assert packaged.verifier is not None and packaged.verifier.second is None
    second = load_verifier(tuned_with_crossencoder[0]).second
    assert second is not None
    verifier = replace(packaged.verifier, second=second)
    u, v = onnx_embedder.embed([STORED, PARAPHRASE])
    probability = verifier.probability([STORED], [PARAPHRASE], u[None], v[None])
    assert probability[0] >= second.gate, "the packaged verifier rates the paraphrase likely: the cross-encoder is asked"
    stacked = float(second.stacked(probability, second.encoder.logits([STORED], [PARAPHRASE]))[0])
    below = MatchPolicy(threshold=0.93, verifier=verifier, cut=second.gate, second_cut=stacked + 0.05)
    above = MatchPolicy(threshold=0.93, verifier=verifier, cut=second.gate, second_cut=stacked - 0.05)
    assert await lookup_with(below, onnx_embedder, milvus_lite_path, cache_name + "b") is None, \
        "the verifier alone would serve it; the stacked score is under the cut"
    served = await lookup_with(above, onnx_embedder, milvus_lite_path, cache_name + "a")
    assert served is not None and served.key == request(cache_name + "a", STORED).exact_key
    # below the verifier's gate the cross-encoder cannot rescue a candidate, however low its cut
    gated = MatchPolicy(threshold=0.93, verifier=verifier, cut=float(np.nextafter(probability[0], 2.0)),
                        second_cut=-1e9)
    assert await lookup_with(gated, onnx_embedder, milvus_lite_path, cache_name + "g") is None
