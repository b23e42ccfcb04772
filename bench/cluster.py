"""What a Redis Cluster costs the exact tier: the same sidecar in front of one redis-server and
in front of a three-primary Redis Cluster (``redis+cluster://``), exact hits and misses.

It starts the test upstream (zero delay), one redis-server, a three-node cluster (the test
fixture's, joined by ``redis-cli --cluster create``) and two ``llmcache-sidecar`` processes, one
per backend, all on loopback; rows run in interleaved rounds and the table shows each row's median
round (see ``bench/exact.py``, whose request body and load generator it uses).

Run: ``python -m bench.cluster`` (from the repository root); ``--help`` for the bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.exact import Row, _post, chat_body, machine, table
from bench.loadgen import LoadResult, run_load
from bench.processes import (
    free_port,
    redis_command,
    running,
    sidecar_command,
    sidecar_env,
    upstream_command,
)
from tests.cluster.conftest import RedisClusterServer

BACKENDS = ("one redis-server", "Redis Cluster, 3 primaries")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per row and round (default 2000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds at most per row and round (default 10)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests per row and round (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every row (default 3)")
    parser.add_argument("--concurrency", type=int, default=32, help="the high concurrency (default 32; rows at 1 too)")
    return parser.parse_args(argv)


async def measure(sidecars: dict[str, str], args: argparse.Namespace) -> list[Row]:
    for url in sidecars.values():  # store the repeated question once and check it is a hit
        seen = [await asyncio.to_thread(_post, url, chat_body(0, stream=False, unique=False)) for _ in range(2)]
        if seen[1] != "hit-exact":
            raise RuntimeError(f"the sidecar at {url} did not cache the benchmark request: {seen}")
    rows = [(f"{backend}: {what}", url, concurrency, unique)
            for concurrency in (1, args.concurrency)
            for what, unique in (("exact hit", False), ("miss (pass-through + store)", True))
            for backend, url in sidecars.items()]
    rounds: list[list[LoadResult]] = [[] for _ in rows]
    for round_number in range(args.rounds):
        for number, (label, url, concurrency, unique) in enumerate(rows):
            offset = (round_number * len(rows) + number) * 10_000_000

            def body(i: int, unique: bool = unique, offset: int = offset) -> dict[str, Any]:
                return chat_body(offset + i, stream=False, unique=unique)

            await run_load(label, url, body, concurrency=concurrency, requests=args.warmup, duration=args.duration)
            result = await run_load(label, url, lambda i, b=body: b(5_000_000 + i), concurrency=concurrency,
                                    requests=args.requests, duration=args.duration)
            print(f"  round {round_number + 1} {label:<60} c={concurrency:<3} p50 {result.percentile(50) * 1000:6.2f} ms"
                  f"  {result.throughput:6.0f} req/s", file=sys.stderr)
            rounds[number].append(result)
    return [Row(results) for results in rounds]


def run(args: argparse.Namespace) -> list[Row]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise RuntimeError("redis-server / redis-cli not found (apt-get install -y redis-server)")
    with tempfile.TemporaryDirectory(prefix="llmcache-bench-cluster-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        cluster = RedisClusterServer(server, cli, work / "cluster")
        stack.callback(cluster.shutdown)
        cluster.create()
        redis_port, upstream_port = free_port(), free_port()
        stack.enter_context(running(redis_command(redis_port, work), redis_port, log=work / "redis.log"))
        stack.enter_context(running(upstream_command(upstream_port), upstream_port, log=work / "upstream.log"))
        sidecars = {}
        for number, (backend, redis_url) in enumerate(zip(BACKENDS, (f"redis://127.0.0.1:{redis_port}/0", cluster.url),
                                                          strict=True)):
            api_port, metrics_port = free_port(), free_port()
            settings = {"upstream_url": f"http://127.0.0.1:{upstream_port}", "listen": f"127.0.0.1:{api_port}",
                        "metrics_listen": f"127.0.0.1:{metrics_port}", "redis_url": redis_url,
                        "semantic_enabled": "false", "milvus_uri": str(work / f"milvus-{number}.db"),
                        "cache_name": "bench", "log_level": "warning"}
            stack.enter_context(running(sidecar_command(), api_port, env=sidecar_env(settings),
                                        log=work / f"sidecar-{number}.log"))
            sidecars[backend] = f"http://127.0.0.1:{api_port}/v1/chat/completions"
        return asyncio.run(measure(sidecars, args))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.cluster " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"machine: {machine()}\ncommand: {command.strip()}", file=sys.stderr)
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    rows = run(args)
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
