"""The exact-tier benchmark harness runs end to end (tiny bounds; no timing is asserted)."""

from __future__ import annotations

import shutil

import pytest

from bench import exact

pytestmark = pytest.mark.skipif(not (shutil.which("llmcache-sidecar") and shutil.which("redis-server")),
                                reason="needs the llmcache-sidecar console script and redis-server")


def test_bench_exact_runs_and_measures_what_it_says(tmp_path) -> None:
    args = exact.parse_args(["--requests", "20", "--warmup", "2", "--rounds", "1", "--concurrency", "4", "--no-pin",
                             "--json", str(tmp_path / "out.json")])
    rows = exact.run(args)
    by_label = {(row.median.label, row.median.concurrency): row.median for row in rows}
    assert by_label[("sidecar exact hit", 4)].cache_results == {"hit-exact": 20}
    assert by_label[("sidecar exact hit, streamed", 4)].cache_results == {"hit-exact": 20}
    assert by_label[("sidecar miss (pass-through + store)", 1)].cache_results == {"miss": 20}
    assert by_label[("upstream direct", 4)].cache_results == {None: 20}
    assert all(row.median.errors == 0 for row in rows)
    assert "| sidecar exact hit | 4 | 20 |" in exact.table(rows)
