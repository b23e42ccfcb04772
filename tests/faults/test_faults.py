"""The fault suite in its short configuration (CI): every fault once, about a second each.

One run (module fixture) of :func:`tests.faults.runner.run_suite`; each test asserts one promise
of the failure behaviour (DESIGN.md, issue 7).  The long run is ``python -m tests.faults``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.runner import Report, RunConfig, run_suite
from tests.faults.table import markdown

pytestmark = pytest.mark.slow

SHORT = RunConfig(fault_seconds=1.0, quiet_seconds=0.3, concurrency=4)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    result = asyncio.run(run_suite(SHORT, Path(tmp_path_factory.mktemp("faults"))))
    print(markdown(result))  # shown with -s, and in the failure report
    yield result


def _examples(report: Report, verdict: str) -> str:
    return "\n".join(report.examples(verdict, limit=10))


def test_every_fault_acted(report: Report) -> None:
    for phase in report.phases:
        if phase.fault.tier is None:
            assert phase.upstream_faults > 0, f"{phase.fault.name}: no request met the upstream fault"
        else:
            assert phase.metrics["result:bypass"] > 0, f"{phase.fault.name}: nothing was passed through"


def test_no_client_visible_error_the_upstream_did_not_cause(report: Report) -> None:
    assert report.count("ours") == 0, _examples(report, "ours")
    assert report.count("upstream") > 0, "the upstream faults must reach the clients"


def test_no_wrong_answer(report: Report) -> None:
    assert report.count("ok") > 0
    assert report.count("wrong") == 0, _examples(report, "wrong")


def test_no_broken_entry_and_every_entry_reads_back_whole(report: Report) -> None:
    assert report.entries.broken == []
    assert report.entries.redis_entries > 0 and report.entries.milvus_rows > 0
    rereads = [o for o in report.outcomes if o.phase == "reread"]
    assert len(rereads) == 2 * len(report.entries.good_keys)
    assert {o.cache for o in rereads} == {"hit-exact"}, "a stored entry must be served (JSON and stream)"


def test_every_tier_recovers_by_itself(report: Report) -> None:
    for phase in report.phases:
        if phase.fault.tier is not None:
            assert phase.recovery is not None, f"{phase.fault.name}: the {phase.fault.tier} tier never hit again"
        if phase.fault.backend == "milvus":  # writes resume too, not only lookups
            assert any(created > phase.restored_wall for created in report.entries.milvus_created)


def test_the_semantic_index_mirrors_milvus_after_the_outages(report: Report) -> None:
    assert (report.entries.index_only, report.entries.milvus_only) == (set(), set())


def test_metrics_account_for_every_bypass(report: Report) -> None:
    seen = report.client_results()
    for result in ("hit-exact", "hit-semantic", "miss", "bypass"):
        assert seen.get(result, 0) == report.metrics[f"result:{result}"], result
    assert report.unexplained_bypasses == [], "a bypass outside every backend outage"
    for phase in report.phases:
        if phase.fault.backend is not None:
            assert phase.metrics[f"errors:{phase.fault.backend}"] > 0, phase.fault.name
            assert phase.fault.degraded in phase.degraded, f"{phase.fault.name}: /admin/stats said {phase.degraded}"
        else:
            assert phase.metrics["result:bypass"] == 0, f"{phase.fault.name}: an upstream fault is no cache trouble"
    assert report.injected_embedder_failures == report.metrics["errors:embedder"] > 0
