"""``llmcache bench``: the sidecar under a realistic mix, per result kind, and its comparisons, in one run.

Processes (separate, loopback only; with pinning, the measured servers on CPU 1 and everything
else on CPU 0):

- redis-server, the test upstream (``tests/upstream.py``, answering after ``--upstream-delay``
  and streaming one token per ``--token-interval``), an instant upstream (CPU 0);
- the real ``llmcache-sidecar`` (exact tier on Redis, semantic tier on Milvus Lite with the
  shipped ONNX model), filled with ``--entries`` answered questions before it starts (CPU 1);
  Milvus Lite runs inside the sidecar (``--milvus embedded``, a file path URI) or as a server
  process of its own (``--milvus server``, ``http://127.0.0.1:port``, CPU 0 beside redis-server),
  as the operator runs Milvus in a cluster;
- a bare aiohttp forwarder to the instant upstream (CPU 1), the bar for an exact hit;
- GPTCache with the same embedding function and entries, after the load phases (CPU 1).

Phases: the mixed workload (Zipf-like popularity over stored questions, paraphrases and unseen
questions, classified by the ``X-LLMCache`` header), then one kind at a time (exact hits against
the forwarder, semantic hits, misses against the upstream called directly, JSON and streamed),
measuring the sidecar's CPU time per phase and its peak RSS.  With ``--speculative both`` a
second sidecar (``speculative_upstream`` on, same Redis and Milvus) follows the first and repeats
the single-client semantic hits and the miss comparisons (phases named ``..., speculative``).
The entries curve (:mod:`bench.curve`) runs last, one process per size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.corpus import Corpus, load_corpus
from bench.load import Phase, run_phase
from bench.prefill import prefill
from bench.processes import (
    REPO, free_port, milvus_server_command, pinned, redis_command, running, sidecar_command, sidecar_env,
    upstream_command,
)
from bench.resources import peak_rss_bytes, rss_bytes
from bench.vectors import entry_vectors, stored_vectors
from bench.workload import Workload, build_workload

CACHE_NAME = "bench"
TTL_SECONDS = 86400
SIMILAR_MARGIN = 0.005
MILVUS_START_TIMEOUT = 120.0  # seconds: the Milvus Lite server imports a lot before it listens


@dataclass(frozen=True)
class Servers:
    sidecar_url: str
    metrics_url: str
    forwarder_url: str
    upstream_url: str
    sidecar_pid: int
    forwarder_pid: int


def servers_at(ports: dict[str, int], sidecar_pid: int, forwarder_pid: int) -> Servers:
    return Servers(f"http://127.0.0.1:{ports['api']}/v1/chat/completions", f"http://127.0.0.1:{ports['metrics']}",
                   f"http://127.0.0.1:{ports['forwarder']}/v1/chat/completions",
                   f"http://127.0.0.1:{ports['upstream']}/v1/chat/completions", sidecar_pid, forwarder_pid)


def metric_total(metrics_url: str, name: str) -> float:
    """The sum of the samples of ``name`` on the sidecar's /metrics."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=30) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.split("{")[0].split(" ")[0] == name)


def _post_json(url: str, payload: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def similar_paraphrases(corpus: Corpus, vectors: np.ndarray, threshold: float) -> set[str]:
    """The paraphrases whose own stored question the model finds at least ``threshold`` similar
    (plus a margin against rounding), i.e. the ones the sidecar will answer as semantic hits."""
    asked = stored_vectors([text for text, _ in corpus.paraphrases])
    own = vectors[[position for _, position in corpus.paraphrases]]
    cosines = (asked * own).sum(axis=1)
    return {text for (text, _), cosine in zip(corpus.paraphrases, cosines) if cosine >= threshold + SIMILAR_MARGIN}


def wait_loaded(metrics_url: str, entries: int, timeout: float) -> float:
    """Seconds until the sidecar's semantic index holds ``entries`` (polled on /admin/stats)."""
    started = time.monotonic()
    while True:
        try:
            loaded = (_get_json(f"{metrics_url}/admin/stats").get("entries") or {}).get("semantic") or 0
        except OSError:
            loaded = 0
        if loaded >= entries:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the sidecar loaded {loaded} of {entries} entries in {timeout:.0f} s")
        time.sleep(1.0)


def semantic_targets(phase: Phase, bodies: list[bytes], corpus: Corpus) -> dict[str, int]:
    """Where the phase's semantic hits pointed: the asked paraphrase's own stored question, another
    real question, or a synthetic entry (read from the answer, which quotes the stored question)."""
    own = {text: corpus.stored[position] for text, position in corpus.paraphrases}
    position = {text: number for number, text in enumerate(corpus.stored)}
    counts = {"own question": 0, "another real question": 0, "synthetic entry": 0}
    for index, answer in phase.kept:
        asked = orjson.loads(bodies[index])["messages"][-1]["content"].rstrip(" ")
        served = orjson.loads(answer)["choices"][0]["message"]["content"].split(" to: ", 1)[-1].strip()
        if asked in own and own[asked].startswith(served):
            counts["own question"] += 1
        elif position.get(served, 0) >= corpus.real_count:
            counts["synthetic entry"] += 1
        else:
            counts["another real question"] += 1
    return counts


async def load_phases(servers: Servers, work: Workload, corpus: Corpus, args: argparse.Namespace,
                      targets: dict[str, dict[str, int]], *, speculative_pass: bool = False) -> list[tuple[str, Phase]]:
    """Every load phase, as (what it measures, result); where semantic hits pointed into ``targets``.

    ``speculative_pass``: the second sidecar of ``--speculative both``; only the single-client
    semantic hits and the miss comparisons, in which the miss and direct questions swap roles
    (the first pass's direct questions never reached a cache, its misses never need one)."""
    pid, duration = servers.sidecar_pid, args.duration
    sidecar, forwarder = servers.sidecar_url, servers.forwarder_url
    out: list[tuple[str, Phase]] = []

    async def phase(what: str, name: str, url: str, bodies: list[bytes], concurrency: int, server: int | None) -> None:
        result = await run_phase(name, url, bodies, concurrency=concurrency, duration=duration, server_pid=server,
                                 keep=frozenset({"hit-semantic"}) if name in ("mixed", "semantic hit") else frozenset())
        if result.kept:
            targets[f"{name}, {concurrency} clients"] = semantic_targets(result, bodies, corpus)
        out.append((what, result))
        print(f"  {name:<28} c={concurrency:<3} {len(result.samples):>6} ok {result.errors:>3} errors "
              f"{len(result.samples) / result.wall_seconds:8.1f} req/s  {result.results()}", file=sys.stderr)

    half = len(work.semantic) // 4
    if speculative_pass:
        await phase("sidecar", "semantic hit, speculative", sidecar, work.semantic[:half], 1, pid)
        await miss_phases(phase, servers, args, (work.direct, work.miss, work.direct_stream, work.miss_stream),
                          ", speculative")
        return out
    await phase("sidecar", "mixed", sidecar, work.mixed, args.mixed_concurrency, pid)
    warm = work.exact[: args.warmup]
    await run_phase("warm-up", sidecar, warm, concurrency=4, duration=duration)
    await run_phase("warm-up", forwarder, warm, concurrency=4, duration=duration)
    for concurrency in (1, args.concurrency):
        await phase("sidecar", "exact hit", sidecar, work.exact, concurrency, pid)
        await phase("forwarder", "bare forwarder", forwarder, work.exact, concurrency, servers.forwarder_pid)
    await phase("sidecar", "semantic hit", sidecar, work.semantic[:half], 1, pid)
    await phase("sidecar", "semantic hit", sidecar, work.semantic[half:], args.semantic_concurrency, pid)
    await miss_phases(phase, servers, args, (work.miss, work.direct, work.miss_stream, work.direct_stream), "")
    return out


async def miss_phases(phase: Callable[..., Awaitable[None]], servers: Servers, args: argparse.Namespace,
                      bodies: tuple[list[bytes], list[bytes], list[bytes], list[bytes]], suffix: str) -> None:
    """Misses against the same kind of request sent straight to the upstream, JSON then streamed;
    ``bodies``: (miss, direct, streamed miss, streamed direct)."""
    miss, direct, miss_stream, direct_stream = bodies
    sidecar, upstream, pid, clients = servers.sidecar_url, servers.upstream_url, servers.sidecar_pid, args.miss_concurrency
    await phase("sidecar", "miss" + suffix, sidecar, miss, clients, pid)
    await phase("upstream", "upstream direct" + suffix, upstream, direct, clients, None)
    await phase("sidecar", "miss, streamed" + suffix, sidecar, miss_stream, clients, pid)
    await phase("upstream", "upstream direct, streamed" + suffix, upstream, direct_stream, clients, None)


def run_gptcache(args: argparse.Namespace, questions: list[str], cpu: int | None, work_dir: Path) -> dict[str, Any]:
    asked, result = work_dir / "gptcache-questions.json", work_dir / "gptcache.json"
    asked.write_text(json.dumps(questions))
    command = pinned([sys.executable, "-m", "bench.gptcache_side", "--entries", str(args.entries),
                      "--queries", str(args.gptcache_queries), "--threshold", str(args.threshold), "--questions", str(asked), "--json", str(result)], cpu)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(result.read_text())


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, run every phase, stop everything; the raw results (see bench.report)."""
    server_cpu, client_cpu = (1, 0) if args.pin else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    corpus = load_corpus(args.entries)
    vectors = entry_vectors(args.entries)
    work = build_workload(corpus, mixed=args.mixed, catalogue=args.catalogue, exact=args.requests,
                          semantic=args.semantic, miss=args.misses, exponent=args.zipf,
                          similar=similar_paraphrases(corpus, vectors, args.threshold))
    ports = {name: free_port() for name in ("redis", "upstream", "instant", "forwarder", "api", "metrics", "milvus")}
    raw: dict[str, Any] = {"corpus": {"entries": len(corpus.stored), "real": corpus.real_count,
                                      "synthetic": len(corpus.stored) - corpus.real_count}}
    with tempfile.TemporaryDirectory(prefix="llmcache-bench-") as tmp, contextlib.ExitStack() as backends:
        work_dir = Path(tmp)
        milvus_server = None
        if args.milvus == "server":
            milvus_uri = f"http://127.0.0.1:{ports['milvus']}"
            milvus_server = backends.enter_context(running(
                pinned(milvus_server_command(ports["milvus"], work_dir / "milvus"), client_cpu), ports["milvus"],
                log=work_dir / "milvus.log", timeout=MILVUS_START_TIMEOUT))
        else:
            milvus_uri = str(work_dir / "milvus.db")
        raw["milvus"] = {"mode": args.milvus, "uri": milvus_uri}
        settings = {"upstream_url": f"http://127.0.0.1:{ports['upstream']}", "listen": f"127.0.0.1:{ports['api']}",
                    "metrics_listen": f"127.0.0.1:{ports['metrics']}",
                    "redis_url": f"redis://127.0.0.1:{ports['redis']}/0", "milvus_uri": milvus_uri,
                    "cache_name": CACHE_NAME, "embedding_device": "cpu", "log_level": "warning",
                    "similarity_threshold": str(args.threshold), "verifier": args.verifier,
                    "ttl_seconds": str(TTL_SECONDS)}
        forwarder = [sys.executable, "-m", "bench.forwarder", "--port", str(ports["forwarder"]),
                     "--upstream", f"http://127.0.0.1:{ports['instant']}"]
        instant = [sys.executable, "-m", "bench.forwarder", "--port", str(ports["instant"])]
        with (running(pinned(redis_command(ports["redis"], work_dir), client_cpu), ports["redis"], log=work_dir / "redis.log"),
              running(pinned(upstream_command(ports["upstream"]), client_cpu), ports["upstream"], log=work_dir / "upstream.log"),
              running(pinned(instant, client_cpu), ports["instant"], log=work_dir / "instant.log"),
              running(pinned(forwarder, server_cpu), ports["forwarder"], log=work_dir / "forwarder.log") as fwd):
            upstream_url = f"http://127.0.0.1:{ports['upstream']}"
            _post_json(f"{upstream_url}/_control", {"delay": args.upstream_delay, "token_interval": args.token_interval})
            raw["prefill"] = prefill(corpus.stored, vectors, cache_name=CACHE_NAME, redis_url=settings["redis_url"],
                                     milvus_uri=milvus_uri, ttl_seconds=TTL_SECONDS)
            print(f"  prefilled {len(corpus.stored)} entries: {raw['prefill']}", file=sys.stderr)
            speculative = {"speculative_upstream": "true" if args.speculative == "on" else "false"}
            with running(pinned(sidecar_command(), server_cpu), ports["api"], env=sidecar_env(settings | speculative),
                         log=work_dir / "sidecar.log") as sidecar:
                metrics_url = f"http://127.0.0.1:{ports['metrics']}"
                raw["sidecar_load_seconds"] = round(wait_loaded(metrics_url, len(corpus.stored), args.load_timeout), 1)
                raw["sidecar_rss_loaded_bytes"] = rss_bytes(sidecar.pid)
                if milvus_server is not None:
                    raw["milvus"] |= {"rss_loaded_bytes": rss_bytes(milvus_server.pid)}
                print(f"  sidecar loaded the index in {raw['sidecar_load_seconds']} s, "
                      f"RSS {raw['sidecar_rss_loaded_bytes'] / 2**20:.0f} MiB"
                      + (f" (Milvus server {raw['milvus']['rss_loaded_bytes'] / 2**20:.0f} MiB)" if milvus_server else ""),
                      file=sys.stderr)
                servers = servers_at(ports, sidecar.pid, fwd.pid)
                raw["semantic_targets"] = {}
                raw["phases"] = asyncio.run(load_phases(servers, work, corpus, args, raw["semantic_targets"]))
                raw["sidecar_peak_rss_bytes"] = peak_rss_bytes(sidecar.pid)
                raw["sidecar_rss_end_bytes"] = rss_bytes(sidecar.pid)
                raw["sidecar_stats"] = _get_json(f"{metrics_url}/admin/stats")
                if milvus_server is not None:
                    raw["milvus"] |= {"peak_rss_bytes": peak_rss_bytes(milvus_server.pid),
                                      "rss_end_bytes": rss_bytes(milvus_server.pid)}
            if args.speculative == "both":
                with running(pinned(sidecar_command(), server_cpu), ports["api"],
                             env=sidecar_env(settings | {"speculative_upstream": "true"}),
                             log=work_dir / "sidecar-speculative.log") as sidecar:
                    servers = servers_at(ports, sidecar.pid, fwd.pid)
                    loaded = wait_loaded(servers.metrics_url, len(corpus.stored), args.load_timeout)
                    print(f"  second sidecar (speculative_upstream on) loaded the index in {loaded:.1f} s", file=sys.stderr)
                    raw["phases"] += asyncio.run(load_phases(servers, work, corpus, args, raw["semantic_targets"],
                                                             speculative_pass=True))
                    raw["speculative"] = {"load_seconds": round(loaded, 1),
                                          "aborted": metric_total(servers.metrics_url, "llmcache_speculative_aborted_total")}
        backends.close()  # the Milvus server stops before GPTCache runs, as the sidecar did
        if args.gptcache:
            semantic_questions = [json.loads(body)["messages"][-1]["content"] for body in work.semantic]
            raw["gptcache"] = run_gptcache(args, semantic_questions, server_cpu, work_dir)
    return raw
