"""A fault run's report as markdown (the table of docs/reliability.md)."""

from __future__ import annotations

from tests.faults.runner import BACKENDS, Report


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(report: Report) -> str:
    cfg = report.config
    lines = [
        (f"Run: {report.seconds:.0f} s, {len(report.outcomes)} requests ({cfg.concurrency} concurrent clients), "
         f"each fault {cfg.fault_seconds:.1f} s after {cfg.quiet_seconds:.1f} s of healthy load, "
         f"sidecar upstream timeout {cfg.upstream_timeout:.1f} s."),
        "",
        ("| phase (fault) | fault lasted (s) | requests | upstream faults applied | errors: upstream's | errors: ours "
         "| wrong answers | bypass (metric) | backend errors (metric) | /admin/stats degraded "
         "| recovery to first hit (s) |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for phase in report.phases:
        name = phase.fault.name
        errors = ", ".join(f"{b} {phase.metrics.get(f'errors:{b}', 0):.0f}" for b in BACKENDS
                           if phase.metrics.get(f"errors:{b}", 0))
        tier = f" ({phase.fault.tier})" if phase.fault.tier else ""
        if phase.reconnect is not None:
            tier = f" ({phase.fault.tier}; reconnected after {phase.reconnect:.2f})"
        lines.append(
            f"| {name} | {phase.restored - phase.injected:.1f} | {sum(1 for o in report.outcomes if o.phase == name)} "
            f"| {phase.upstream_faults} "
            f"| {report.count('upstream', name)} | {report.count('ours', name)} | {report.count('wrong', name)} "
            f"| {phase.metrics.get('result:bypass', 0):.0f} | {errors or '0'} | {', '.join(phase.degraded) or '-'} "
            f"| {_seconds(phase.recovery)}{tier} |")
    seen = report.client_results()
    lines += [
        f"| **total** (warm-up, re-read included) | | {len(report.outcomes)} | {sum(p.upstream_faults for p in report.phases)} "
        f"| {report.count('upstream')} | {report.count('ours')} | {report.count('wrong')} "
        f"| {report.metrics.get('result:bypass', 0):.0f} | "
        + ", ".join(f"{b} {report.metrics.get(f'errors:{b}', 0):.0f}" for b in BACKENDS) + " | | |",
        "",
        "Results the clients saw vs `llmcache_requests_total` (load, before the re-read): "
        + ", ".join(f"{r} {seen.get(r, 0)}/{report.metrics.get(f'result:{r}', 0):.0f}"
                    for r in ("hit-exact", "hit-semantic", "miss", "bypass")) + ".",
        (f"Bypass answers outside every backend outage: {len(report.unexplained_bypasses)}. "
         f"Embedding failures injected / counted: {report.injected_embedder_failures}"
         f"/{report.metrics.get('errors:embedder', 0):.0f}."),
        (f"Stored entries after the faults: {report.entries.redis_entries} in Redis "
         f"(each re-read as JSON and as a stream), {report.entries.milvus_rows} Milvus rows "
         f"({report.entries.dangling_rows} pointing to an entry Redis lost in its restart); "
         f"broken entries: {len(report.entries.broken)}. Semantic index vs Milvus: "
         f"{len(report.entries.index_only)} keys only in the index, {len(report.entries.milvus_only)} only in Milvus."),
    ]
    lines += [
        (f"Milvus rows written after Milvus came back ({phase.fault.name} phase): "
         f"{sum(1 for created in report.entries.milvus_created if created > phase.restored_wall)}.")
        for phase in report.phases if phase.fault.backend == "milvus"
    ]
    for name in ("ours", "wrong"):
        for example in report.examples(name):
            lines.append(f"- {name}: {example}")
    lines += [f"- broken: {problem}" for problem in report.entries.broken[:5]]
    return "\n".join(lines)
