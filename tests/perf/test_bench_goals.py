"""The goal rows of ``python -m bench.exact`` run end to end with wrk (tiny bounds; no timing is asserted)."""

from __future__ import annotations

import shutil

import pytest

from bench import exact

pytestmark = pytest.mark.skipif(not all(shutil.which(tool) for tool in ("wrk", "llmcache-sidecar", "redis-server")),
                                reason="needs wrk, the llmcache-sidecar console script and redis-server")


def test_goal_rows_measure_what_they_say() -> None:
    args = exact.parse_args(["--rows", "goals", "--rounds", "1", "--wrk-seconds", "1", "--saturation", "4",
                             "--ttfb-requests", "5", "--no-pin"])
    rows, first_byte = exact.run_goals(args)
    for row in rows:
        result = row.median
        assert result.errors == 0 and result.requests > 0, row.scenario
        expected = ("-" if row.scenario.target in ("upstream", "forwarder")
                    else "miss" if row.scenario.unique else "hit-exact")
        assert set(result.cache_results) == {expected}, (row.scenario, result.cache_results)
    assert [len(phase.samples) for phase in first_byte.sidecar + first_byte.direct] == [5, 5]
    assert {sample.result for sample in first_byte.sidecar[0].samples} == {"miss"}
    assert len(exact.goal_checks(rows, first_byte, 4)) == 6
    assert "| sidecar exact hit, --workers 2 | 4 |" in exact.goal_table(rows)
