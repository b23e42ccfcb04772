"""The report's picture: latency by result kind, and the entries curve (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MIB = 2**20


def _bars(report: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(label, p50 ms, p99 ms) of each kind measured alone (single client) and its bar."""
    bars = []
    wanted = [("exact hit", "exact hit", 1), ("bare forwarder", "bare forwarder", 1),
              ("semantic hit", "semantic hit", 1), ("miss", "miss", None), ("upstream direct", "upstream direct", None)]
    for label, name, concurrency in wanted:
        phase = next((p for p in report["phases"] if p["name"] == name
                      and (concurrency is None or p["concurrency"] == concurrency)), None)
        if phase and phase["p50_ms"] is not None:
            suffix = "" if concurrency == 1 else f" (c={phase['concurrency']})"
            bars.append((label + suffix, phase["p50_ms"], phase["p99_ms"]))
    gptcache = report.get("gptcache") or {}
    if "p50_ms" in gptcache:
        bars.insert(3, ("GPTCache lookup", gptcache["p50_ms"], gptcache["p99_ms"]))
    return bars


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    bars = _bars(report)
    labels = [b[0] for b in bars]
    positions = range(len(bars))
    left.barh([p + 0.2 for p in positions], [b[1] for b in bars], height=0.4, label="p50")
    left.barh([p - 0.2 for p in positions], [b[2] for b in bars], height=0.4, label="p99")
    left.set_yticks(list(positions), labels)
    left.set_xscale("log")
    left.set_xlabel("latency, ms (log)")
    left.set_title(f"Latency by kind ({report['corpus']['entries']:,} entries)")
    left.invert_yaxis()
    left.legend()
    curve = report.get("curve") or []
    if curve:
        sizes = [c["entries"] for c in curve]
        right.plot(sizes, [c["lookup_p50_ms"] for c in curve], "o-", label="lookup p50 (embedding + search)")
        right.plot(sizes, [c["lookup_p99_ms"] for c in curve], "o--", label="lookup p99")
        right.plot(sizes, [c["search_p50_ms"] for c in curve], "s-", label="index search p50")
        right.set_xscale("log")
        right.set_yscale("log")
        right.set_xlabel("entries in one scope")
        right.set_ylabel("ms (log)")
        memory = right.twinx()
        memory.plot(sizes, [c["rss_bytes"] / MIB for c in curve], "^-", color="tab:red", label="process RSS")
        memory.set_ylabel("RSS, MiB", color="tab:red")
        handles = right.get_legend_handles_labels()[0] + memory.get_legend_handles_labels()[0]
        right.legend(handles, [h.get_label() for h in handles], loc="upper left")
        right.set_title("Entries curve (in-process index)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
