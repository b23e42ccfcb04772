"""From the raw results of a run to the report: per-kind statistics, comparisons, goals, tables."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import subprocess
from typing import Any

import numpy as np

from bench.load import Phase, Sample

KINDS = ("hit-exact", "hit-semantic", "miss")
PACKAGES = ("aiohttp", "redis", "onnxruntime", "hnswlib", "numpy", "pymilvus", "milvus-lite", "gptcache", "faiss-cpu")
MIB = 2**20


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 3) if values else None


def sample_stats(samples: list[Sample]) -> dict[str, Any]:
    latencies = [s.latency for s in samples]
    first = [s.first_byte for s in samples]
    return {"count": len(samples), "p50_ms": _ms(latencies, 50), "p99_ms": _ms(latencies, 99),
            "first_byte_p50_ms": _ms(first, 50), "first_byte_p99_ms": _ms(first, 99)}


def phase_summary(target: str, phase: Phase) -> dict[str, Any]:
    summary = {"name": phase.name, "target": target, "concurrency": phase.concurrency,
               "requests": len(phase.samples), "errors": phase.errors, "wall_seconds": round(phase.wall_seconds, 3),
               "throughput": round(len(phase.samples) / phase.wall_seconds, 1) if phase.wall_seconds else 0.0,
               "results": phase.results(), **sample_stats(phase.samples)}
    if phase.cpu_seconds is not None and phase.samples:
        summary["cpu_ms_per_request"] = round(phase.cpu_seconds / len(phase.samples) * 1000, 3)
    by_kind = {}
    for kind in sorted(phase.results()):
        by_kind[kind] = sample_stats([s for s in phase.samples if s.result == kind])
    summary["by_kind"] = by_kind
    return summary


def _find(phases: list[dict[str, Any]], name: str, concurrency: int | None = None) -> dict[str, Any] | None:
    for phase in phases:
        if phase["name"] == name and (concurrency is None or phase["concurrency"] == concurrency):
            return phase
    return None


def _diff(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


def comparisons(phases: list[dict[str, Any]], gptcache: dict[str, Any] | None, high: int, semantic_high: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for concurrency in (1, high):
        hit, bare = _find(phases, "exact hit", concurrency), _find(phases, "bare forwarder", concurrency)
        if hit and bare:
            out[f"exact_vs_forwarder_c{concurrency}"] = {
                "hit_p50_ms": hit["p50_ms"], "forwarder_p50_ms": bare["p50_ms"], "hit_p99_ms": hit["p99_ms"],
                "forwarder_p99_ms": bare["p99_ms"], "hit_per_s": hit["throughput"], "forwarder_per_s": bare["throughput"],
                "throughput_ratio": round(hit["throughput"] / bare["throughput"], 2) if bare["throughput"] else None}
    single, many = _find(phases, "semantic hit", 1), _find(phases, "semantic hit", semantic_high)
    if single and many and gptcache and "throughput" in gptcache:
        ours = max(single["throughput"], many["throughput"])
        out["semantic_vs_gptcache"] = {
            "ours_p50_ms": single["by_kind"].get("hit-semantic", {}).get("p50_ms"),
            "ours_single_client_per_s": single["throughput"], "ours_per_s": many["throughput"],
            "ours_concurrency": semantic_high, "gptcache_p50_ms": round(gptcache["p50_ms"], 3),
            "gptcache_p99_ms": round(gptcache["p99_ms"], 3), "gptcache_per_s": round(gptcache["throughput"], 1),
            "throughput_ratio": round(ours / gptcache["throughput"], 2) if gptcache["throughput"] else None}
    for suffix in ("", ", streamed", ", speculative", ", streamed, speculative"):
        miss, direct = _find(phases, "miss" + suffix), _find(phases, "upstream direct" + suffix)
        if miss and direct:
            out["miss_vs_direct" + suffix.replace(", ", "_")] = {
                "miss_p50_ms": miss["p50_ms"], "direct_p50_ms": direct["p50_ms"],
                "added_p50_ms": _diff(miss["p50_ms"], direct["p50_ms"]),
                "added_p99_ms": _diff(miss["p99_ms"], direct["p99_ms"]),
                "added_first_byte_p50_ms": _diff(miss["first_byte_p50_ms"], direct["first_byte_p50_ms"]),
                "added_first_byte_p99_ms": _diff(miss["first_byte_p99_ms"], direct["first_byte_p99_ms"])}
    return out


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    redis_server = shutil.which("redis-server")
    if redis_server:
        text = subprocess.run([redis_server, "--version"], capture_output=True, text=True).stdout
        found["redis-server"] = next((p.split("=")[1] for p in text.split() if p.startswith("v=")), text.strip())
    return found


def build_report(raw: dict[str, Any], args: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    phases = [phase_summary(target, phase) for target, phase in raw.get("phases", [])]
    mixed = _find(phases, "mixed")
    kinds = {kind: {"mixed": mixed["by_kind"].get(kind) if mixed else None} for kind in KINDS}
    alone = {"hit-exact": "exact hit", "hit-semantic": "semantic hit", "miss": "miss"}
    for kind, name in alone.items():
        runs = [p for p in phases if p["name"] == name]
        kinds[kind]["alone"] = [{"concurrency": p["concurrency"], "throughput": p["throughput"],
                                 "cpu_ms_per_request": p.get("cpu_ms_per_request"), **p["by_kind"].get(kind, {})}
                                for p in runs]
    return {"context": context, "args": args, "corpus": raw.get("corpus"), "prefill": raw.get("prefill"),
            "sidecar": {"load_seconds": raw.get("sidecar_load_seconds"), "rss_loaded_bytes": raw.get("sidecar_rss_loaded_bytes"),
                        "peak_rss_bytes": raw.get("sidecar_peak_rss_bytes"), "rss_end_bytes": raw.get("sidecar_rss_end_bytes"),
                        "stats": raw.get("sidecar_stats")},
            "milvus": raw.get("milvus"), "speculative": raw.get("speculative"),
            "phases": phases, "kinds": kinds, "semantic_targets": raw.get("semantic_targets"), "gptcache": raw.get("gptcache"),
            "comparisons": comparisons(phases, raw.get("gptcache"), args["concurrency"], args["semantic_concurrency"]),
            "curve": raw.get("curve", [])}


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"machine: {report['context']['machine']}", f"command: `{report['context']['command']}`",
             f"load average before / after: {report['context']['load_before']:.2f} / {report['context']['load_after']:.2f}",
             "", "| phase | target | clients | requests | errors | X-LLMCache | p50 ms | p99 ms | first byte p50 ms | req/s | sidecar CPU ms/req |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for p in report["phases"]:
        results = ", ".join(f"{k}: {v}" for k, v in sorted(p["results"].items()))
        lines.append(f"| {p['name']} | {p['target']} | {p['concurrency']} | {p['requests']} | {p['errors']} | {results} | "
                     f"{_cell(p['p50_ms'])} | {_cell(p['p99_ms'])} | {_cell(p['first_byte_p50_ms'])} | "
                     f"{_cell(p['throughput'], 0)} | {_cell(p.get('cpu_ms_per_request'))} |")
    mixed = next((p for p in report["phases"] if p["name"] == "mixed"), None)
    if mixed:
        lines += ["", "mixed workload by kind:", "", "| kind | requests | p50 ms | p99 ms | first byte p50 ms |", "|---|---:|---:|---:|---:|"]
        for kind, s in mixed["by_kind"].items():
            lines.append(f"| {kind} | {s['count']} | {_cell(s['p50_ms'])} | {_cell(s['p99_ms'])} | {_cell(s['first_byte_p50_ms'])} |")
    side = report["sidecar"]
    if side.get("peak_rss_bytes"):
        lines += ["", f"sidecar: index loaded in {side['load_seconds']} s; RSS {side['rss_loaded_bytes'] / MIB:.0f} MiB "
                      f"after loading, peak {side['peak_rss_bytes'] / MIB:.0f} MiB, {side['rss_end_bytes'] / MIB:.0f} MiB at the end"]
    milvus = report.get("milvus") or {}
    lines += ["", f"Milvus Lite: {milvus.get('mode', 'embedded')} ({milvus.get('uri')})"]
    if milvus.get("peak_rss_bytes"):
        total = (side.get("rss_loaded_bytes") or 0) + milvus["rss_loaded_bytes"]
        lines[-1] += (f"; server RSS {milvus['rss_loaded_bytes'] / MIB:.0f} MiB after loading, peak "
                      f"{milvus['peak_rss_bytes'] / MIB:.0f} MiB, {milvus['rss_end_bytes'] / MIB:.0f} MiB at the end; "
                      f"sidecar + server after loading {total / MIB:.0f} MiB")
    if report.get("speculative"):
        lines += ["", "second sidecar, speculative_upstream on (phases '..., speculative'): " + _json_lines(report["speculative"])]
    lines += ["", "semantic hits pointed to: " + _json_lines(report.get("semantic_targets"))]
    lines += ["", "comparisons: " + _json_lines(report["comparisons"])]
    if report.get("gptcache"):
        lines += ["", "GPTCache: " + _json_lines(report["gptcache"])]
    if report.get("curve"):
        lines += ["", "| entries | index | build s | index MiB | process RSS MiB | lookup p50 / p99 ms | embedding p50 ms | search p50 / p99 ms | nearest is own |",
                  "|---:|---|---:|---:|---:|---|---:|---|---:|"]
        for c in report["curve"]:
            lines.append(f"| {c['entries']:,} | {c['mode']} | {c['build_seconds']} | {c['index_bytes'] / MIB:.0f} | "
                         f"{c['rss_bytes'] / MIB:.0f} | {c['lookup_p50_ms']} / {c['lookup_p99_ms']} | {c['embed_p50_ms']} | "
                         f"{c['search_p50_ms']} / {c['search_p99_ms']} | {c['nearest_is_own']} |")
    return "\n".join(lines)


def _json_lines(data: Any) -> str:
    return json.dumps(data, indent=1)
