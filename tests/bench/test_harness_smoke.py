"""``llmcache bench`` runs end to end with tiny counts: every phase, every result kind, the report's
structure (no timing is asserted: speed goals live in docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.corpus import DATA_DIR, MOCK_FILE, QQP_FILE

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(not (shutil.which("llmcache-sidecar") and shutil.which("redis-server")),
                       reason="needs the llmcache-sidecar console script and redis-server"),
    pytest.mark.skipif(not ((DATA_DIR / QQP_FILE).is_file() and (DATA_DIR / MOCK_FILE).is_file()),
                       reason=f"needs the shared evaluation data in {DATA_DIR}"),
]

SIDECAR_PHASES = {"mixed", "exact hit", "semantic hit", "miss", "miss, streamed"}


def run_bench(out: Path, *options: str) -> tuple[dict, str]:
    """The harness with tiny counts and ``options``; (the JSON report, the markdown on stdout)."""
    command = [sys.executable, "-m", "llmcache_sidecar.tools", "bench", "--entries", "300", "--requests", "40",
               "--semantic", "12", "--misses", "6", "--mixed", "120", "--catalogue", "30", "--warmup", "5",
               "--concurrency", "4", "--semantic-concurrency", "4", "--miss-concurrency", "3", "--mixed-concurrency", "4",
               "--upstream-delay", "0.01", "--token-interval", "0.001", "--duration", "20",
               "--no-gptcache", "--no-pin", "--json", str(out / "report.json"), *options]
    env = {**os.environ, "LLMCACHE_BENCH_CACHE": str(out / "vectors")}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| mixed | sidecar |" in done.stdout  # the markdown tables
    return json.loads((out / "report.json").read_text()), done.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_bench(tmp_path_factory.mktemp("bench"), "--curve", "300", "--curve-queries", "10",
                     "--speculative", "both")[0]


def test_every_phase_ran_without_errors(report: dict) -> None:
    names = {(p["name"], p["target"]) for p in report["phases"]}
    assert {(name, "sidecar") for name in SIDECAR_PHASES} <= names
    assert {("bare forwarder", "forwarder"), ("upstream direct", "upstream"),
            ("upstream direct, streamed", "upstream")} <= names
    for phase in report["phases"]:
        assert phase["errors"] == 0, phase
        assert phase["requests"] > 0, phase


def test_the_mixed_workload_shows_every_kind(report: dict) -> None:
    mixed = next(p for p in report["phases"] if p["name"] == "mixed")
    assert {"hit-exact", "hit-semantic", "miss"} <= set(mixed["results"])
    for kind in ("hit-exact", "hit-semantic", "miss"):
        stats = report["kinds"][kind]["mixed"]
        assert stats["count"] == mixed["results"][kind]
        assert stats["p50_ms"] <= stats["p99_ms"]


def test_single_kind_phases_are_what_they_say(report: dict) -> None:
    for phase in report["phases"]:
        if phase["name"] == "exact hit":
            assert set(phase["results"]) == {"hit-exact"}
        if phase["name"] == "semantic hit":
            assert set(phase["results"]) == {"hit-semantic"}
        if phase["name"].startswith("miss"):
            assert set(phase["results"]) <= {"miss", "hit-semantic"}  # an unseen question may be near a stored one
            assert phase["results"].get("miss")
        if phase["target"] != "sidecar":
            assert set(phase["results"]) == {"direct"}
        if phase["target"] == "sidecar":
            # /proc counts CPU in clock ticks (10 ms): a tiny phase of cheap hits may round to 0
            assert phase["cpu_ms_per_request"] >= 0
    mixed = next(p for p in report["phases"] if p["name"] == "mixed")
    assert mixed["cpu_ms_per_request"] > 0  # 120 requests with embeddings: far above one tick


def test_report_holds_resources_comparisons_and_curve(report: dict) -> None:
    assert report["corpus"] == {"entries": 300, "real": 300, "synthetic": 0}
    sidecar = report["sidecar"]
    assert sidecar["peak_rss_bytes"] >= sidecar["rss_loaded_bytes"] > 0
    assert sidecar["stats"]["entries"]["semantic"] >= 300
    comparisons = report["comparisons"]
    assert {"exact_vs_forwarder_c1", "exact_vs_forwarder_c4", "miss_vs_direct", "miss_vs_direct_streamed"} <= set(comparisons)
    assert comparisons["miss_vs_direct_streamed"]["added_first_byte_p50_ms"] is not None
    [point] = report["curve"]
    assert point["entries"] == 300 and point["mode"] == "numpy" and point["queries"] > 0
    assert point["rss_bytes"] > point["rss_baseline_bytes"] > 0
    assert set(report["context"]["versions"]) >= {"python", "aiohttp", "onnxruntime", "hnswlib"}
    assert report["milvus"]["mode"] == "embedded" and "://" not in report["milvus"]["uri"]


def test_speculative_pass_repeats_semantic_hits_and_the_miss_comparisons(report: dict) -> None:
    """``--speculative both``: a second sidecar with speculative_upstream on, in the same run."""
    names = {(p["name"], p["target"]) for p in report["phases"]}
    assert {("semantic hit, speculative", "sidecar"), ("miss, speculative", "sidecar"),
            ("miss, streamed, speculative", "sidecar"), ("upstream direct, speculative", "upstream"),
            ("upstream direct, streamed, speculative", "upstream")} <= names
    hits = next(p for p in report["phases"] if p["name"] == "semantic hit, speculative")
    assert set(hits["results"]) == {"hit-semantic"}
    # every semantic hit of the second sidecar aborted its upstream call (misses' near hits too)
    assert report["speculative"]["aborted"] >= hits["results"]["hit-semantic"]
    comparisons = report["comparisons"]
    assert comparisons["miss_vs_direct_speculative"]["added_p50_ms"] is not None
    assert comparisons["miss_vs_direct_streamed_speculative"]["added_first_byte_p50_ms"] is not None


def test_milvus_as_a_server_process_is_measured_apart(tmp_path: Path) -> None:
    """``--milvus server``: the sidecar reads and writes a Milvus Lite server over gRPC, whose RSS
    is reported apart from the sidecar's; every kind still occurs."""
    report, markdown = run_bench(tmp_path, "--curve", "", "--milvus", "server")
    milvus = report["milvus"]
    assert milvus["mode"] == "server" and milvus["uri"].startswith("http://127.0.0.1:")
    assert milvus["peak_rss_bytes"] >= milvus["rss_loaded_bytes"] > 0 and milvus["rss_end_bytes"] > 0
    assert report["sidecar"]["stats"]["entries"]["semantic"] >= 300  # loaded from the server at start-up
    mixed = next(p for p in report["phases"] if p["name"] == "mixed")
    assert {"hit-exact", "hit-semantic", "miss"} <= set(mixed["results"])
    assert all(phase["errors"] == 0 for phase in report["phases"])
    assert "Milvus Lite: server (http://127.0.0.1:" in markdown and "server RSS" in markdown
