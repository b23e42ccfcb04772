"""Start the processes a benchmark measures (redis-server, the test upstream, a Milvus Lite server,
the sidecar console script) on loopback, optionally pinned to one CPU each with ``taskset``, and stop them again."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s") from None
            time.sleep(0.05)


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` prefixed with ``taskset -c cpu`` when asked and possible."""
    taskset = shutil.which("taskset")
    if cpu is None or taskset is None:
        return command
    return [taskset, "-c", str(cpu), *command]


@contextlib.contextmanager
def running(command: list[str], port: int, *, env: Mapping[str, str] | None = None, log: Path,
            timeout: float = 30.0) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends (SIGTERM, then SIGKILL after 10 s); ``timeout``: seconds
    it may take to listen on ``port``."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=dict(env) if env is not None else None, cwd=REPO,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, timeout)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def redis_command(port: int, workdir: Path) -> list[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found (apt-get install -y redis-server)")
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]


def milvus_server_command(port: int, data_dir: Path) -> list[str]:
    """Milvus Lite as a server of its own (``http://127.0.0.1:port``), as a sidecar meets Milvus in a
    cluster, instead of embedded in the sidecar's process by a file path URI."""
    return [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir), "--host", "127.0.0.1",
            "--port", str(port)]


def upstream_command(port: int) -> list[str]:
    return [sys.executable, "-m", "tests.upstream", "--host", "127.0.0.1", "--port", str(port)]


def sidecar_command() -> list[str]:
    script = shutil.which("llmcache-sidecar")
    if script is None:
        raise RuntimeError("llmcache-sidecar not found (pip install -e .)")
    return [script]


def sidecar_env(settings: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCACHE_")}
    env.update({f"LLMCACHE_{k.upper()}": v for k, v in settings.items()})
    return env
