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

The goal rows (issue 10) are measured with ``wrk`` when it is installed (a C load generator, so
the client's own cost does not hide the server's): an exact hit against a bare aiohttp forwarder
to an instant upstream (``bench.forwarder``; forwarder on CPU 1, its upstream on CPU 0 like
redis-server), at one connection and at saturation, a hit at half the saturation rate, a miss
against the upstream called directly, ``--workers 2`` against one worker, and (with the aiohttp
client, which sees the first byte) the added time to the first streamed byte of a miss.

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

from bench.load import Phase, run_phase
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
from bench.wrk import WrkResult, run_wrk, wrk_binary

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


#: connections of the paced row (each waits between its requests so that all together ask for
#: half the saturation rate)
HALF_RATE_CONNECTIONS = 32
TTFB_REQUESTS = 300


@dataclass(frozen=True)
class GoalScenario:
    """One wrk row; ``target``: "upstream" (the test upstream alone), "forwarder" (the bare
    forwarder to the instant upstream), "sidecar", or "workers" (the sidecar with ``--workers 2``,
    on both CPUs)."""

    label: str
    target: str
    connections: int
    unique: bool = False
    #: paced at half the rate the sidecar's saturation row reached in the same round
    half_rate: bool = False


def goal_scenarios(saturation: int) -> list[GoalScenario]:
    return [GoalScenario("upstream direct", "upstream", 1),
            GoalScenario("bare forwarder to instant upstream", "forwarder", 1),
            GoalScenario("sidecar exact hit", "sidecar", 1),
            GoalScenario("upstream direct, new question each time", "upstream", 1, unique=True),
            GoalScenario("sidecar miss (pass-through + store)", "sidecar", 1, unique=True),
            GoalScenario("bare forwarder to instant upstream", "forwarder", saturation),
            GoalScenario("sidecar exact hit", "sidecar", saturation),
            GoalScenario("sidecar exact hit, half the saturation rate", "sidecar", HALF_RATE_CONNECTIONS,
                         half_rate=True),
            GoalScenario("sidecar exact hit, --workers 2", "workers", saturation)]


def goal_bodies() -> tuple[bytes, bytes]:
    """(the stored question's body, a template with ``@N@`` where each request numbers itself)."""
    hit = json.dumps(chat_body(0, stream=False, unique=False)).encode()
    miss = json.dumps(chat_body(0, stream=False, unique=True)).replace("(#0)", "(#@N@)").encode()
    return hit, miss


@dataclass(frozen=True)
class GoalRow:
    scenario: GoalScenario
    rounds: list[WrkResult]

    @property
    def median(self) -> WrkResult:
        return sorted(self.rounds, key=lambda r: r.throughput)[len(self.rounds) // 2]

    @property
    def best(self) -> WrkResult:
        return max(self.rounds, key=lambda r: r.throughput)


@dataclass(frozen=True)
class FirstByte:
    """Streamed misses through the sidecar against the same requests sent to the upstream, one
    client, per round: p50 of the time to the first body byte, and of the whole answer."""

    direct: list[Phase]
    sidecar: list[Phase]


def _p50(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def _median_of_rounds(values: list[float]) -> float:
    return _p50(values)


async def measure_first_byte(upstream_url: str, sidecar_url: str, rounds: int, requests: int) -> FirstByte:
    direct, sidecar = [], []
    for round_number in range(rounds):
        for target, url, phases in (("upstream", upstream_url, direct), ("sidecar", sidecar_url, sidecar)):
            offset = 900_000_000 + round_number * 2 * requests + (requests if target == "sidecar" else 0)
            bodies = [json.dumps(chat_body(offset + i, stream=True, unique=True)).encode() for i in range(requests)]
            phases.append(await run_phase(f"{target} streamed miss", url, bodies, concurrency=1, duration=30.0))
    return FirstByte(direct, sidecar)


def measure_goals(urls: dict[str, str], args: argparse.Namespace) -> tuple[list[GoalRow], FirstByte]:
    hit, miss = goal_bodies()
    for target in ("sidecar", "workers"):  # the entry (shared through Redis) is there for both
        states = [_post(urls[target], chat_body(0, stream=False, unique=False)) for _ in range(2)]
        if states[-1] != "hit-exact":
            raise RuntimeError(f"the {target} does not answer the benchmark request from the cache: {states}")
    scenarios = goal_scenarios(args.saturation)
    rounds: list[list[WrkResult]] = [[] for _ in scenarios]
    client_cpu = 0 if args.pin else None
    for round_number in range(args.rounds):
        saturation_rate = 0.0
        for number, scenario in enumerate(scenarios):
            delay_ms = 0
            if scenario.half_rate:
                delay_ms = max(1, round(scenario.connections * 1000 / max(1.0, saturation_rate / 2)))
            result = run_wrk(scenario.label, urls[scenario.target], miss if scenario.unique else hit,
                             connections=scenario.connections, seconds=args.wrk_seconds, unique=scenario.unique,
                             delay_ms=delay_ms, cpu=client_cpu)
            if scenario.target == "sidecar" and scenario.connections == args.saturation and not scenario.half_rate:
                saturation_rate = result.throughput
            print(f"  round {round_number + 1} {scenario.label:<45} c={scenario.connections:<3} "
                  f"p50 {result.p50 * 1000:7.3f} ms  p99 {result.p99 * 1000:7.3f} ms  {result.throughput:7.0f} req/s",
                  file=sys.stderr)
            rounds[number].append(result)
    first_byte = asyncio.run(measure_first_byte(urls["upstream"], urls["sidecar"], args.rounds, args.ttfb_requests))
    return [GoalRow(scenario, results) for scenario, results in zip(scenarios, rounds, strict=True)], first_byte


def goal_table(rows: list[GoalRow]) -> str:
    lines = ["| path | connections | p50 ms | p99 ms | req/s (median round) | req/s (best round) | errors | X-LLMCache |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        r = row.median
        caches = ", ".join(f"{k}: {v}" for k, v in sorted(r.cache_results.items()))
        lines.append(f"| {row.scenario.label} | {r.connections} | {r.p50 * 1000:.3f} | {r.p99 * 1000:.3f} | "
                     f"{r.throughput:.0f} | {row.best.throughput:.0f} | {r.errors} | {caches} |")
    return "\n".join(lines)


def goal_checks(rows: list[GoalRow], first_byte: FirstByte, saturation: int) -> list[str]:
    """Issue 10's exact-tier goals, each from per-round comparisons (median over the rounds)."""
    def row(target: str, connections: int, unique: bool = False, half_rate: bool = False) -> GoalRow:
        return next(r for r in rows if (r.scenario.target, r.scenario.connections, r.scenario.unique,
                                        r.scenario.half_rate) == (target, connections, unique, half_rate))

    hit1, hit_sat = row("sidecar", 1), row("sidecar", saturation)
    forwarder_sat, workers_sat = row("forwarder", saturation), row("workers", saturation)
    miss1, direct1 = row("sidecar", 1, unique=True), row("upstream", 1, unique=True)
    half = row("sidecar", HALF_RATE_CONNECTIONS, half_rate=True)
    hit_p50 = _median_of_rounds([r.p50 for r in hit1.rounds])
    hit_p99 = _median_of_rounds([r.p99 for r in hit1.rounds])
    rate = _median_of_rounds([r.throughput for r in hit_sat.rounds])
    versus = _median_of_rounds([h.throughput / f.throughput for h, f in zip(hit_sat.rounds, forwarder_sat.rounds)])
    speedup = _median_of_rounds([w.throughput / h.throughput for w, h in zip(workers_sat.rounds, hit_sat.rounds)])
    added = _median_of_rounds([m.p50 - d.p50 for m, d in zip(miss1.rounds, direct1.rounds)])
    ttfb = _median_of_rounds([_p50([s.first_byte for s in side.samples]) - _p50([s.first_byte for s in up.samples])
                              for side, up in zip(first_byte.sidecar, first_byte.direct)])
    whole = _median_of_rounds([_p50([s.latency for s in side.samples]) - _p50([s.latency for s in up.samples])
                               for side, up in zip(first_byte.sidecar, first_byte.direct)])

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return [
        f"exact hit, one connection: p50 {hit_p50 * 1000:.3f} ms (goal <= 0.5: {verdict(hit_p50 <= 0.0005)}), "
        f"p99 {hit_p99 * 1000:.3f} ms (goal <= 1: {verdict(hit_p99 <= 0.001)})",
        f"exact hits at saturation ({saturation} connections): {rate:.0f}/s (goal >= 3500: {verdict(rate >= 3500)}); "
        f"{versus:.2f}x the bare forwarder's pass-throughs in the same rounds (goal > 1: {verdict(versus > 1)})",
        f"exact hit at half the saturation rate ({_median_of_rounds([r.throughput for r in half.rounds]):.0f}/s): "
        f"p50 {_median_of_rounds([r.p50 for r in half.rounds]) * 1000:.3f} ms, "
        f"p99 {_median_of_rounds([r.p99 for r in half.rounds]) * 1000:.3f} ms",
        f"miss: {added * 1000:+.3f} ms at p50 against the upstream called directly (goal <= 1: {verdict(added <= 0.001)})",
        f"streamed miss: {ttfb * 1000:+.3f} ms to the first byte (goal <= 1: {verdict(ttfb <= 0.001)}), "
        f"{whole * 1000:+.3f} ms to the last byte, against the upstream called directly (p50s, one client)",
        f"--workers 2: {speedup:.2f}x the hits/s of one worker at saturation (same rounds)",
    ]


def run_goals(args: argparse.Namespace) -> tuple[list[GoalRow], FirstByte]:
    """Start everything the goal rows need, measure them, stop everything."""
    server_cpu, client_cpu = (1, 0) if args.pin else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    names = ("redis", "upstream", "api", "metrics", "workers_api", "workers_metrics", "instant", "forwarder")
    ports = {name: free_port() for name in names}
    with tempfile.TemporaryDirectory(prefix="llmcache-bench-") as tmp:
        work = Path(tmp)
        settings = {"upstream_url": f"http://127.0.0.1:{ports['upstream']}", "listen": f"127.0.0.1:{ports['api']}",
                    "metrics_listen": f"127.0.0.1:{ports['metrics']}",
                    "redis_url": f"redis://127.0.0.1:{ports['redis']}/0", "semantic_enabled": "false",
                    "milvus_uri": str(work / "milvus.db"), "cache_name": "bench", "log_level": "warning"}
        two = {**settings, "listen": f"127.0.0.1:{ports['workers_api']}",
               "metrics_listen": f"127.0.0.1:{ports['workers_metrics']}", "workers": "2"}
        forwarder = [sys.executable, "-m", "bench.forwarder", "--port", str(ports["forwarder"]),
                     "--upstream", f"http://127.0.0.1:{ports['instant']}"]
        instant = [sys.executable, "-m", "bench.forwarder", "--port", str(ports["instant"])]
        with (running(pinned(redis_command(ports["redis"], work), client_cpu), ports["redis"], log=work / "redis.log"),
              running(pinned(upstream_command(ports["upstream"]), server_cpu), ports["upstream"],
                      log=work / "upstream.log"),
              running(pinned(instant, client_cpu), ports["instant"], log=work / "instant.log"),
              running(pinned(forwarder, server_cpu), ports["forwarder"], log=work / "forwarder.log"),
              running(pinned(sidecar_command(), server_cpu), ports["api"], env=sidecar_env(settings),
                      log=work / "sidecar.log"),
              running(sidecar_command(), ports["workers_api"], env=sidecar_env(two), log=work / "workers.log")):
            path = "/v1/chat/completions"
            urls = {"upstream": f"http://127.0.0.1:{ports['upstream']}{path}",
                    "forwarder": f"http://127.0.0.1:{ports['forwarder']}{path}",
                    "sidecar": f"http://127.0.0.1:{ports['api']}{path}",
                    "workers": f"http://127.0.0.1:{ports['workers_api']}{path}"}
            return measure_goals(urls, args)


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
    parser.add_argument("--rows", choices=("all", "goals", "aiohttp"), default="all",
                        help="goals: the wrk rows of issue 10's goals (needs wrk); aiohttp: the rows measured with the "
                             "aiohttp client (JSON and streamed); default all")
    parser.add_argument("--saturation", type=int, default=64, help="connections of the goal rows at saturation (default 64)")
    parser.add_argument("--wrk-seconds", type=float, default=3.0, help="seconds per goal row and round (default 3)")
    parser.add_argument("--ttfb-requests", type=int, default=TTFB_REQUESTS,
                        help=f"streamed misses per round for the first-byte comparison (default {TTFB_REQUESTS})")
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
    report: dict[str, Any] = {}
    if args.rows in ("all", "goals"):
        if wrk_binary() is None:
            print("wrk is not installed (apt-get install -y wrk): goal rows skipped", file=sys.stderr)
        else:
            goals, first_byte = run_goals(args)
            checks = goal_checks(goals, first_byte, args.saturation)
            print(goal_table(goals) + "\n\n" + "\n".join(f"- {line}" for line in checks) + "\n")
            report["goals"] = {"rows": [{"label": row.scenario.label, "connections": r.connections,
                                         "p50_ms": r.p50 * 1000, "p99_ms": r.p99 * 1000, "throughput": r.throughput,
                                         "best_throughput": row.best.throughput, "errors": r.errors,
                                         "x_llmcache": r.cache_results}
                                        for row in goals for r in [row.median]],
                               "checks": checks}
    if args.rows in ("all", "aiohttp"):
        results = run(args)
        print(table(results))
        report["aiohttp"] = [{"label": r.label, "concurrency": r.concurrency, "requests": len(r.latencies),
                              "p50_ms": r.percentile(50) * 1000, "p99_ms": r.percentile(99) * 1000,
                              "throughput": r.throughput, "best_throughput": row.best.throughput, "errors": r.errors,
                              "x_llmcache": {str(k): v for k, v in r.cache_results.items()}}
                             for row in results for r in [row.median]]
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
