"""The backends the fault suite breaks: a Milvus server process and the sidecar's embedder.

Redis is the real ``redis-server`` of :class:`tests.conftest.RedisServer` (killed and restarted
on the same port, empty: it runs without persistence).

Milvus runs as ``python -m milvus_lite server`` in a process of its own on a fixed loopback
port, as a sidecar meets it in a cluster (a Milvus *server*, ``http://host:port``): killing the
process is the outage, starting it again on the same port and data directory is the return.
(With a path URI the sidecar embeds Milvus Lite in its own process and restarts it by itself.)
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import free_port, wait_for_port

MILVUS_START_TIMEOUT = 60.0


class MilvusProcess:
    """``python -m milvus_lite server`` on ``127.0.0.1:<port>``; stop = SIGKILL."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections (seconds: it imports a lot)."""
        if self.process is not None and self.process.poll() is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir.parent / "milvus.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir),
                 "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, MILVUS_START_TIMEOUT)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the server: no goodbye to connected clients (its file lock dies with it)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


class FlakyEmbedder:
    """Stands where the sidecar's batcher keeps its :class:`~llmcache_sidecar.embedder.OnnxEmbedder`
    and fails every batch while ``failing`` is set (as a broken ONNX session would).

    ``failed_texts`` counts the queries refused: each is one failed embedding call of the
    semantic tier, which the sidecar must count as ``backend_errors_total{backend="embedder"}``.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failing = False
        self.failed_texts = 0
        self._lock = threading.Lock()  # embed runs on the batcher's worker thread

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.failing:
            with self._lock:
                self.failed_texts += len(texts)
            raise RuntimeError("injected fault: the ONNX session failed")
        result: np.ndarray = self.inner.embed(texts)
        return result

    @classmethod
    def install(cls, app: Any) -> FlakyEmbedder:
        """Wrap the embedder of the sidecar app ``app`` (its semantic tier must be open)."""
        from llmcache_sidecar import state

        tier = app[state.SEMANTIC_TIER]
        assert tier is not None, "the sidecar has no semantic tier"
        batcher = tier.embedder
        flaky = cls(batcher.embedder)
        batcher.embedder = flaky
        return flaky
