"""Exact-tier benchmark: hit latency and throughput of one sidecar process vs. the upstream alone.

In one run it starts redis-server, the test upstream (zero delay) and the real ``llmcache-sidecar``
console script as separate processes on loopback, then sends the same chat request:

- straight to the upstream (the baseline: what an app pays without the cache, minus the model),
- to the sidecar, where it is an exact hit (stored once before measuring),
- to the sidecar with a new question each time (a miss: pass-through plus write-back),

at concurrency 1 (latency) and at a higher concurrency (throughput), JSON and streamed.  All rows
run in several interleaved rounds and the table shows each row's median round, so a burst of
load from elsewhere on the machine does not decide a comparison.  With
``--pin`` (default when there are at least 2 CPUs) the server under test runs on CPU 1 and the
load generator and redis-server on CPU 0, so the load generator never shares the sidecar's core.

Run: ``python -m bench.exact`` (from the repository root); ``--help`` for the bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult, run_load
from bench.processes import (
    free_port,
    pinned,
    redis_command,
    running,
    sidecar_command,
    sidecar_env,
    upstream_command,
)

QUESTION = "What is the capital of France? Answer in one short sentence."


@dataclass(frozen=True)
class Scenario:
    label: str
    target: str  # "upstream" or "sidecar"
    concurrency: int
    stream: bool = False
    unique: bool = False  # a new question per request (every request is a miss)


def chat_body(index: int, *, stream: bool, unique: bool) -> dict[str, Any]:
    question = f"{QUESTION} (#{index})" if unique else QUESTION
    body: dict[str, Any] = {"model": "test-model", "temperature": 0, "max_tokens": 64,
                            "messages": [{"role": "system", "content": "You are a concise assistant."},
                                         {"role": "user", "content": question}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def scenarios(high: int) -> list[Scenario]:
    rows = []
    for concurrency in (1, high):
        rows += [Scenario("upstream direct", "upstream", concurrency),
                 Scenario("sidecar exact hit", "sidecar", concurrency),
                 Scenario("sidecar miss (pass-through + store)", "sidecar", concurrency, unique=True)]
    rows += [Scenario("upstream direct, streamed", "upstream", high, stream=True),
             Scenario("sidecar exact hit, streamed", "sidecar", high, stream=True)]
    return rows


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} CPUs ({model}){memory}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def table(rows: list[Row]) -> str:
    lines = ["| path | concurrency | requests | p50 ms | p99 ms | req/s | best round req/s | errors | X-LLMCache |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        r = row.median
        caches = ", ".join(f"{k or '-'}: {v}" for k, v in sorted(r.cache_results.items(), key=lambda kv: str(kv[0])))
        lines.append(f"| {r.label} | {r.concurrency} | {len(r.latencies)} | {r.percentile(50) * 1000:.2f} | "
                     f"{r.percentile(99) * 1000:.2f} | {r.throughput:.0f} | {row.best.throughput:.0f} | {r.errors} | {caches} |")
    return "\n".join(lines)


def _post(url: str, body: dict[str, Any]) -> str | None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        return response.headers.get("X-LLMCache")


async def measure(upstream_url: str, sidecar_url: str, args: argparse.Namespace) -> list[Row]:
    # store the repeated question once (JSON and stream share the entry), and check it is a hit
    first = await asyncio.to_thread(_post, sidecar_url, chat_body(0, stream=False, unique=False))
    again = await asyncio.to_thread(_post, sidecar_url, chat_body(0, stream=False, unique=False))
    if (first, again) != ("miss", "hit-exact"):
        raise RuntimeError(f"the sidecar did not cache the benchmark request: X-LLMCache {first!r} then {again!r}")
    rows = scenarios(args.concurrency)
    rounds: list[list[LoadResult]] = [[] for _ in rows]
    for round_number in range(args.rounds):  # interleaved: a burst of noise hits one round of each row
        for number, scenario in enumerate(rows):
            url = upstream_url if scenario.target == "upstream" else sidecar_url
            offset = (round_number * len(rows) + number) * 10_000_000  # unique questions never repeat

            def warmup_body(i: int, s: Scenario = scenario, offset: int = offset) -> dict[str, Any]:
                return chat_body(offset + i, stream=s.stream, unique=s.unique)

            def measured_body(i: int, s: Scenario = scenario, offset: int = offset) -> dict[str, Any]:
                return chat_body(offset + 5_000_000 + i, stream=s.stream, unique=s.unique)

            await run_load(scenario.label, url, warmup_body, concurrency=scenario.concurrency,
                           requests=args.warmup, duration=args.duration)  # discarded
            result = await run_load(scenario.label, url, measured_body, concurrency=scenario.concurrency,
                                    requests=args.requests, duration=args.duration)
            print(f"  round {round_number + 1} {scenario.label:<38} c={scenario.concurrency:<3} "
                  f"p50 {result.percentile(50) * 1000:7.2f} ms  p99 {result.percentile(99) * 1000:7.2f} ms  "
                  f"{result.throughput:7.0f} req/s", file=sys.stderr)
            rounds[number].append(result)
    return [Row(results) for results in rounds]


@dataclass(frozen=True)
class Row:
    """All rounds of one scenario."""

    rounds: list[LoadResult]

    @property
    def median(self) -> LoadResult:
        """The round with the median throughput (the table shows one real round, not a blend)."""
        return sorted(self.rounds, key=lambda r: r.throughput)[len(self.rounds) // 2]

    @property
    def best(self) -> LoadResult:
        return max(self.rounds, key=lambda r: r.throughput)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.exact", description="Exact-tier hit latency and throughput vs. the upstream alone.")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per row and round (default 2000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds at most per row and round (default 10)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests per row and round, not measured (default 200)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of all rows, interleaved; the table shows each row's median round (default 3)")
    parser.add_argument("--concurrency", type=int, default=32, help="the high concurrency (default 32; rows at 1 too)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
                        help="pin the server under test to CPU 1, the rest to CPU 0 (default: on with >= 2 CPUs)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[Row]:
    server_cpu, client_cpu = (1, 0) if args.pin else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    redis_port, upstream_port, api_port, metrics_port = (free_port() for _ in range(4))
    with tempfile.TemporaryDirectory(prefix="llmcache-bench-") as tmp:
        work = Path(tmp)
        settings = {"upstream_url": f"http://127.0.0.1:{upstream_port}", "listen": f"127.0.0.1:{api_port}",
                    "metrics_listen": f"127.0.0.1:{metrics_port}", "redis_url": f"redis://127.0.0.1:{redis_port}/0",
                    "semantic_enabled": "false", "milvus_uri": str(work / "milvus.db"), "cache_name": "bench",
                    "log_level": "warning"}
        with (running(pinned(redis_command(redis_port, work), client_cpu), redis_port, log=work / "redis.log"),
              running(pinned(upstream_command(upstream_port), server_cpu), upstream_port, log=work / "upstream.log"),
              running(pinned(sidecar_command(), server_cpu), api_port, env=sidecar_env(settings), log=work / "sidecar.log")):
            return asyncio.run(measure(f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
                                       f"http://127.0.0.1:{api_port}/v1/chat/completions", args))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.exact " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"machine: {machine()}\ncommand: {command.strip()}\npinned: {args.pin}", file=sys.stderr)
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    results = run(args)
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([{"label": r.label, "concurrency": r.concurrency, "requests": len(r.latencies),
                                          "p50_ms": r.percentile(50) * 1000, "p99_ms": r.percentile(99) * 1000,
                                          "throughput": r.throughput, "best_throughput": row.best.throughput,
                                          "errors": r.errors, "x_llmcache": {str(k): v for k, v in r.cache_results.items()}}
                                         for row in results for r in [row.median]], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
