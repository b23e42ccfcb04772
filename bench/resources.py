"""CPU time and memory of a process tree (the sidecar and any workers it forks), from /proc."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, living ones only."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        if Path(f"/proc/{current}").exists():
            tree.append(current)
            todo += _children(current)
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its living descendants, in clock
    ticks (``SC_CLK_TCK``, 10 ms here): a phase shorter than a few ticks of CPU reads coarse."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """Resident memory now, summed over the process tree."""
    return 1024 * sum(_status_kib(member, "VmRSS") for member in process_tree(pid))


def peak_rss_bytes(pid: int) -> int:
    """Peak resident memory (VmHWM), summed over the process tree (an upper bound of the tree's
    peak: the members need not peak at the same moment)."""
    return 1024 * sum(_status_kib(member, "VmHWM") for member in process_tree(pid))
