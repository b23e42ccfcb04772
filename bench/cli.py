"""Command line of the harness: ``llmcache bench`` (from a checkout) or ``python -m bench``.

Prints the tables (markdown) on stdout, progress on stderr; ``--json`` keeps the whole report,
``--plot`` draws the entries curve and the latency by kind (matplotlib, the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.exact import machine
from bench.processes import REPO, pinned


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmcache bench",
        description="The sidecar (real Redis, Milvus Lite, ONNX model) in front of the test upstream: a mixed "
                    "workload classified by X-LLMCache, one kind at a time against its bar (bare forwarder, "
                    "GPTCache, the upstream called directly), and the entries curve.  Loopback only.")
    p.add_argument("--entries", type=int, default=100_000, help="answered questions in the cache before the load (default 100000)")
    p.add_argument("--requests", type=int, default=5000, help="requests per exact-hit / forwarder phase (default 5000)")
    p.add_argument("--semantic", type=int, default=2000, help="semantic-hit requests: a quarter single client, the rest concurrent (default 2000)")
    p.add_argument("--misses", type=int, default=60, help="requests per miss / upstream phase (default 60)")
    p.add_argument("--mixed", type=int, default=3000, help="requests of the mixed workload (default 3000)")
    p.add_argument("--catalogue", type=int, default=1500, help="distinct questions the mixed workload draws from (default 1500)")
    p.add_argument("--zipf", type=float, default=1.0, help="popularity exponent s: rank r drawn with weight 1/r^s (default 1.0)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds at most per phase (default 30)")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured requests before the exact phases (default 200)")
    p.add_argument("--concurrency", type=int, default=32, help="clients of the saturating exact / forwarder phase (default 32)")
    p.add_argument("--semantic-concurrency", type=int, default=16, help="clients of the concurrent semantic phase (default 16)")
    p.add_argument("--miss-concurrency", type=int, default=1,
                   help="clients of the miss / upstream phases (default 1: the latency a miss adds, without queueing)")
    p.add_argument("--mixed-concurrency", type=int, default=16, help="clients of the mixed workload (default 16)")
    p.add_argument("--threshold", type=float, default=0.93, help="the sidecar's semantic threshold (default 0.93, the shipped one)")
    p.add_argument("--verifier", choices=["on", "off"], default="off",
                   help="the sidecar's match verifier (default off: hits decided by the cosine threshold, as GPTCache decides "
                        "them, so the comparison and the choice of semantic-phase questions hold; on: the shipped default)")
    p.add_argument("--milvus", choices=("embedded", "server"), default="embedded",
                   help="where Milvus Lite runs: inside the sidecar's process, from a file path URI (default), or as "
                        "a server process of its own on a loopback port (http://127.0.0.1:PORT, on CPU 0 with redis), "
                        "as the operator runs Milvus in a cluster; its RSS is then reported apart from the sidecar's")
    p.add_argument("--speculative", choices=("off", "on", "both"), default="off",
                   help="the sidecar's speculative_upstream (upstream call started during the semantic lookup); both: "
                        "a second sidecar with it on follows the first and repeats the single-client semantic hits "
                        "and the miss comparisons, in the same run (default off)")
    p.add_argument("--upstream-delay", type=float, default=0.3, help="seconds the test upstream takes before answering (default 0.3)")
    p.add_argument("--token-interval", type=float, default=0.01, help="seconds between streamed tokens (default 0.01: 100 tokens/s)")
    p.add_argument("--gptcache", action=argparse.BooleanOptionalAction, default=True, help="run the GPTCache comparison (default on)")
    p.add_argument("--gptcache-queries", type=int, default=300, help="GPTCache lookups, one client (default 300)")
    p.add_argument("--curve", default="1000,10000,100000,1000000", help="entries curve sizes, comma-separated ('' for none)")
    p.add_argument("--curve-queries", type=int, default=300, help="lookups per curve point (default 300)")
    p.add_argument("--curve-point", type=Path, action="append", default=[],
                   help="add a curve point measured earlier by 'python -m bench.curve --json FILE' (repeatable)")
    p.add_argument("--build-threads", type=int, help="HNSW build threads for the curve (default: the product's, 1)")
    p.add_argument("--load-timeout", type=float, default=1800.0, help="seconds the sidecar may take to load its index (default 1800)")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
                   help="measured servers on CPU 1, load generator and the rest on CPU 0 (default: on with >= 2 CPUs)")
    p.add_argument("--json", type=Path, help="write the whole report here")
    p.add_argument("--plot", type=Path, help="draw the curve and the latency by kind into this PNG")
    return p


def run_curve(sizes: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    points = []
    cpu = 1 if args.pin else None
    with tempfile.TemporaryDirectory(prefix="llmcache-bench-curve-") as tmp:
        for size in sizes:
            out = Path(tmp) / f"{size}.json"
            command = [sys.executable, "-m", "bench.curve", "--entries", str(size), "--queries", str(args.curve_queries),
                       "--json", str(out)]
            if args.build_threads:
                command += ["--build-threads", str(args.build_threads)]
            print(f"  curve: {size} entries", file=sys.stderr)
            subprocess.run(pinned(command, cpu), cwd=REPO, check=True)
            points.append(json.loads(out.read_text()))
    return points


def other_jobs() -> list[str]:
    """What else ran on the machine (the heaviest processes not of this run), for the notes."""
    listing = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu", "--no-headers"], capture_output=True, text=True)
    own = {"bench", "redis-server", "llmcache-sidecar", "tests.upstream"}
    return [line.strip()[:160] for line in listing.stdout.splitlines()[:12]
            if float(line.split(None, 1)[0]) >= 10 and not any(word in line for word in own)]


def main(argv: list[str] | None = None) -> int:
    from bench.harness import run
    from bench.report import build_report, markdown, versions

    args = parser().parse_args(argv)
    command = "llmcache bench " + " ".join(argv if argv is not None else sys.argv[1:])
    context: dict[str, Any] = {"machine": machine(), "command": command.strip(), "versions": versions(),
                               "pinned": args.pin, "load_before": os.getloadavg()[0], "other_jobs_before": other_jobs()}
    print(f"machine: {context['machine']}\nload average: {context['load_before']:.2f}", file=sys.stderr)
    raw = run(args)
    sizes = [int(s) for s in args.curve.split(",") if s.strip()]
    earlier = [json.loads(path.read_text()) | {"measured": f"separately ({path.name})"} for path in args.curve_point]
    raw["curve"] = sorted((run_curve(sizes, args) if sizes else []) + earlier, key=lambda point: point["entries"])
    context["load_after"] = os.getloadavg()[0]
    context["other_jobs_after"] = other_jobs()
    report = build_report(raw, vars(args) | {"json": str(args.json), "plot": str(args.plot),
                                             "curve_point": [str(path) for path in args.curve_point]}, context)
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot:
        from bench.plot import plot

        plot(report, args.plot)
    return 0
