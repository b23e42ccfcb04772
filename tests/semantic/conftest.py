"""Fixtures of the semantic-tier tests: the real default model (loaded once per session), one
Milvus Lite data directory shared by the session (each test gets its own cache name, hence its
own collection), a Milvus Lite *server* on a TCP port that a test can stop and restart, and
semantic sidecars in front of the test upstream."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmcache_sidecar import state
from llmcache_sidecar.default_model import default_model_files
from llmcache_sidecar.embedder import OnnxEmbedder
from tests.conftest import free_port

_names = itertools.count()


@pytest.fixture(scope="session")
def onnx_embedder() -> OnnxEmbedder:
    return OnnxEmbedder(default_model_files(), "cpu")


@pytest.fixture(scope="session")
def milvus_lite_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedded Milvus Lite for the session (its start-up is the slow part)."""
    return str(tmp_path_factory.mktemp("milvus") / "lite.db")


@pytest.fixture
def cache_name() -> str:
    """A fresh cache name, hence a fresh collection in the shared Milvus."""
    return f"t{next(_names)}-sem"


class MilvusServer:
    """Milvus Lite serving gRPC on a fixed loopback port, stoppable like an outage."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self._server: Any = None
        self._db: Any = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from milvus_lite.adapter.grpc.server import start_server_in_thread

        if self._server is None:
            self._server, self._db, _ = start_server_in_thread(str(self.data_dir), port=self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0).wait()
            self._db.close()
            self._server = self._db = None


@pytest.fixture
def milvus_server(tmp_path: Path) -> Iterator[MilvusServer]:
    server = MilvusServer(tmp_path / "milvus-server")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def semantic_sidecar_factory(sidecar_factory: Callable[..., Any], redis_server: Any, milvus_lite_path: str,
                             cache_name: str) -> Callable[..., Any]:
    """``await make(**settings)``: a sidecar with both tiers (Redis, Milvus), its semantic tier
    connected and loaded before it is returned."""

    async def make(**overrides: Any) -> Any:
        values: dict[str, Any] = {"redis_url": redis_server.url, "semantic_enabled": True,
                                  "milvus_uri": milvus_lite_path, "cache_name": cache_name,
                                  "embedding_device": "cpu"}
        values.update(overrides)
        handle = await sidecar_factory(**values)
        tier = handle.app[state.SEMANTIC_TIER]
        assert tier is not None, "the semantic tier did not open"
        await tier.wait_loaded()
        return handle

    return make
