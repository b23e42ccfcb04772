"""``python -m tests.faults --duration 60``: run the fault suite and print its markdown table."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path

from tests.faults.faults import FAULTS
from tests.faults.runner import RunConfig, run_suite
from tests.faults.table import markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults and healthy load in between "
                        "(recovery waits, set-up and the final checks come on top)")
    parser.add_argument("--concurrency", type=int, default=12, help="clients sending at the same time")
    parser.add_argument("--fault", action="append", choices=sorted(FAULTS), help="only these faults (repeatable)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the sidecar warns about every failed backend call
    faults = tuple(args.fault) if args.fault else tuple(FAULTS)
    config = RunConfig.for_duration(args.duration, concurrency=args.concurrency, seed=args.seed, faults=faults)
    with tempfile.TemporaryDirectory(prefix="llmcache-faults-") as workdir:
        report = asyncio.run(run_suite(config, Path(workdir)))
    print(markdown(report))
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"command: python -m tests.faults {' '.join(argv if argv is not None else sys.argv[1:])}")
    failed = report.count("ours") + report.count("wrong") + len(report.entries.broken)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
