"""An async HTTP load generator: bounded by a request count and a duration, loopback only.

``concurrency`` workers share one aiohttp session and send requests back to back until
``requests`` have been sent or ``duration`` seconds have passed, whichever comes first; each
latency is measured from sending the request to reading the whole response body.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class LoadResult:
    label: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)  # seconds, one per successful request
    errors: int = 0
    wall_seconds: float = 0.0
    #: how many answers carried each X-LLMCache value (None: header absent)
    cache_results: dict[str | None, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall_seconds if self.wall_seconds else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in seconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[rank]


def ensure_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"the benchmark only sends load to loopback addresses, not {host!r}")


async def run_load(label: str, url: str, body_for: Callable[[int], dict[str, Any]], *, concurrency: int,
                   requests: int, duration: float) -> LoadResult:
    """POST ``body_for(i)`` (i = 0, 1, ...) to ``url``; stop after ``requests`` or ``duration`` s."""
    ensure_loopback(url)
    result = LoadResult(label, concurrency)
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            nonlocal next_index
            while next_index < requests and time.perf_counter() < deadline:
                index = next_index
                next_index += 1
                data = json.dumps(body_for(index)).encode()
                sent = time.perf_counter()
                try:
                    async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as response:
                        await response.read()
                        ok = response.status == 200
                        cache = response.headers.get("X-LLMCache")
                except aiohttp.ClientError:
                    ok, cache = False, None
                if ok:
                    result.latencies.append(time.perf_counter() - sent)
                    result.cache_results[cache] = result.cache_results.get(cache, 0) + 1
                else:
                    result.errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.wall_seconds = time.perf_counter() - start
    return result
