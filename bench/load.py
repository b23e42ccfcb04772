"""One load phase: prepared request bodies sent by ``concurrency`` clients, every answer timed
and classified by the sidecar's ``X-LLMCache`` header.

Bounded twice: at most ``len(bodies)`` requests and at most ``duration`` seconds.  Loopback only.
Each sample keeps the time to the first byte of the body (what a streaming client waits for)
and to its last byte; the sidecar's CPU time over the phase comes from /proc
(:mod:`bench.resources`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from bench.loadgen import ensure_loopback
from bench.resources import cpu_seconds

HEADER = "X-LLMCache"
#: what a sample is called when the answer carries no X-LLMCache header (not the sidecar)
DIRECT = "direct"


@dataclass(frozen=True, slots=True)
class Sample:
    result: str
    latency: float  # seconds, request sent to last byte read
    first_byte: float  # seconds, request sent to first body byte read


@dataclass
class Phase:
    name: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    wall_seconds: float = 0.0
    #: CPU seconds the measured server process tree used during the phase (None: not measured)
    cpu_seconds: float | None = None
    #: (index of the body sent, answer body) of the answers whose result was asked to be kept
    kept: list[tuple[int, bytes]] = field(default_factory=list)

    def results(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sample in self.samples:
            counts[sample.result] = counts.get(sample.result, 0) + 1
        return counts


async def run_phase(name: str, url: str, bodies: Sequence[bytes], *, concurrency: int, duration: float,
                    server_pid: int | None = None, keep: frozenset[str] = frozenset()) -> Phase:
    """POST every body (in order, shared by the clients) until done or ``duration`` s passed;
    keep the answers whose X-LLMCache value is in ``keep``."""
    ensure_loopback(url)
    phase = Phase(name, concurrency)
    next_index = 0
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        cpu_before = cpu_seconds(server_pid) if server_pid else None
        start = time.perf_counter()
        deadline = start + duration

        async def client() -> None:
            nonlocal next_index
            while next_index < len(bodies) and time.perf_counter() < deadline:
                index = next_index
                next_index += 1
                sent = time.perf_counter()
                try:
                    async with session.post(url, data=bodies[index], headers=headers) as response:
                        head = await response.content.readany()
                        first = time.perf_counter()
                        rest = await response.read()
                        ok = response.status == 200
                        result = response.headers.get(HEADER, DIRECT)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                if ok:
                    phase.samples.append(Sample(result, time.perf_counter() - sent, first - sent))
                    if result in keep:
                        phase.kept.append((index, head + rest))
                else:
                    phase.errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        phase.wall_seconds = time.perf_counter() - start
        if server_pid:
            assert cpu_before is not None
            phase.cpu_seconds = cpu_seconds(server_pid) - cpu_before
    return phase
