"""The semantic sidecar fixtures (real model, Milvus Lite, Redis) of tests/semantic, reused."""

from tests.semantic.conftest import cache_name, milvus_lite_path, semantic_sidecar_factory  # noqa: F401
