"""``llmcache-sidecar --workers 2``: two processes on one port, sharing entries and metrics.

Which worker answers a connection is read from the kernel (the worker holding the accepted
socket), so the test can send a request to each worker on purpose.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmcache_sidecar.__main__ import main
from tests.conftest import free_port
from tests.upstream import TestUpstream

SCRIPT = shutil.which("llmcache-sidecar")
pytestmark = pytest.mark.skipif(SCRIPT is None, reason="llmcache-sidecar not installed (pip install -e .)")

BODY = orjson.dumps({"model": "test-model", "temperature": 0,
                     "messages": [{"role": "user", "content": "Which worker answers this?"}]})


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCACHE_", "PROMETHEUS_"))}
    env.update({f"LLMCACHE_{k.upper()}": v for k, v in settings.items()})
    return env


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    pids = [int(child) for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()]
    return [pid for pid in pids if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def accepted_by(client_port: int, workers: list[int]) -> int | None:
    """The worker holding the server side of the loopback connection from ``client_port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == client_port:  # remote address of the server side
            inode = fields[9]
    if inode is None:
        return None
    return next((pid for pid in workers if inode in socket_inodes(pid)), None)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, path: str,
                  body: bytes = b"") -> Answer:
    """One HTTP/1.1 request on an open connection, which the server then closes."""
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return Answer(int(status_line.split()[1]), headers, payload)


@dataclass
class Workers:
    process: asyncio.subprocess.Process
    api_port: int
    metrics_port: int
    pids: list[int]


async def _wait_ready(metrics_port: int, process: asyncio.subprocess.Process, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        assert process.returncode is None, f"llmcache-sidecar --workers exited with {process.returncode}"
        try:
            answer = await request(*await asyncio.open_connection("127.0.0.1", metrics_port), "GET", "/readyz")
            if answer.status == 200:
                return
        except OSError:
            pass
        assert loop.time() < deadline, "the workers did not become ready"
        await asyncio.sleep(0.1)


@pytest.fixture
async def workers(upstream: TestUpstream, redis_server: Any, tmp_path: Path) -> AsyncIterator[Workers]:
    api_port, metrics_port = free_port(), free_port()
    env = _env(upstream_url=upstream.url, listen=f"127.0.0.1:{api_port}", metrics_listen=f"127.0.0.1:{metrics_port}",
               redis_url=redis_server.url, semantic_enabled="false", milvus_uri=str(tmp_path / "m.db"),
               cache_name="workers", workers="2", log_level="warning")
    assert SCRIPT is not None
    process = await asyncio.create_subprocess_exec(SCRIPT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await _wait_ready(metrics_port, process)
        pids = worker_pids(process.pid)
        assert len(pids) == 2, f"expected 2 workers, found {pids}"
        # each worker is ready once it listens: until both are, a connection lands on the ready one
        for pid in pids:
            await _wait_until(lambda pid=pid: _listens(pid, api_port))
        yield Workers(process, api_port, metrics_port, pids)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pid in worker_pids(process.pid) if alive(process.pid) else []:
            os.kill(pid, signal.SIGKILL)


def _listens(pid: int, port: int) -> bool:
    inodes = socket_inodes(pid)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port and fields[9] in inodes:
            return True
    return False


async def _wait_until(condition: Any, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def connection_to(worker: int, pool: Workers) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that ``worker`` accepted (the kernel spreads connections by their ports)."""
    for _ in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", pool.api_port)
        client_port = writer.get_extra_info("sockname")[1]
        owner = None
        for _ in range(50):
            owner = accepted_by(client_port, pool.pids)
            if owner is not None:
                break
            await asyncio.sleep(0.01)
        if owner == worker:
            return reader, writer
        writer.close()
    raise AssertionError(f"no connection landed on worker {worker} in 200 tries")


def metric(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in the scrape"
    return float(match.group(1))


async def test_two_workers_share_entries_metrics_and_stop_together(workers: Workers, upstream: TestUpstream) -> None:
    first, second = workers.pids
    stored = await request(*await connection_to(first, workers), "POST", "/v1/chat/completions", BODY)
    served = await request(*await connection_to(second, workers), "POST", "/v1/chat/completions", BODY)
    assert (stored.status, stored.headers["x-llmcache"]) == (200, "miss")
    assert (served.status, served.headers["x-llmcache"]) == (200, "hit-exact")
    assert orjson.loads(served.body) == orjson.loads(stored.body)
    assert upstream.calls["/v1/chat/completions"] == 1

    # whichever worker answers the scrape reports both workers' requests
    for _ in range(4):
        scrape = await request(*await asyncio.open_connection("127.0.0.1", workers.metrics_port), "GET", "/metrics")
        text = scrape.body.decode()
        assert metric(text, "llmcache_requests_total", 'result="miss"') == 1
        assert metric(text, "llmcache_requests_total", 'result="hit-exact"') == 1

    workers.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(workers.process.wait(), 30) == 0
    assert not any(alive(pid) for pid in workers.pids)


async def test_a_worker_that_dies_stops_the_other_and_the_command_fails(workers: Workers) -> None:
    os.kill(workers.pids[0], signal.SIGKILL)
    assert await asyncio.wait_for(workers.process.wait(), 30) == 1
    assert not alive(workers.pids[1])


@pytest.mark.parametrize(("settings", "problem"), [
    ({}, "need LLMCACHE_REDIS_URL"),
    ({"LLMCACHE_REDIS_URL": "redis://127.0.0.1:1/0", "LLMCACHE_SEMANTIC_ENABLED": "true",
      "LLMCACHE_MILVUS_URI": "./m.db"}, "need a Milvus server"),
    ({"LLMCACHE_REDIS_URL": "redis://127.0.0.1:1/0", "LLMCACHE_LISTEN": "127.0.0.1:0"}, "needs a fixed port"),
])
def test_workers_refuse_what_they_cannot_share(settings: dict[str, str], problem: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"LLMCACHE_UPSTREAM_URL": "http://127.0.0.1:1", "LLMCACHE_SEMANTIC_ENABLED": "false",
               "LLMCACHE_LISTEN": "127.0.0.1:18999", "LLMCACHE_METRICS_LISTEN": "127.0.0.1:19999", **settings}
    assert main(["--workers", "2"], environ=environ) == 2
    assert problem in capsys.readouterr().err
