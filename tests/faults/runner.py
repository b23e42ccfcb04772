"""Run the fault suite: a real sidecar, real backends, load, faults one after the other.

Set-up (all on loopback, in a temporary directory, torn down at the end): a ``redis-server``,
a Milvus Lite server process, the test upstream, and ``llmcache_sidecar.server.serve`` with both
tiers and the real ONNX embedder (wrapped so it can be made to fail).  ``concurrency`` clients
(the official ``openai`` client) send the mixed load of :mod:`tests.faults.workload` the whole
time.  Each fault of :mod:`tests.faults.faults` runs in a phase of its own:

1. ``quiet_seconds`` of healthy load;
2. the fault, for ``fault_seconds`` (``/admin/stats`` is read at its end);
3. the fault ends; a probe measures the wall-clock time from the backend's return to the first
   hit served by the tier it took down (exact: the same question again and again; semantic: a
   new spelling of a stored question each time, so only the semantic tier can answer it);
4. the metrics are read (counters per phase).

Then the load stops, every stored entry is checked (:mod:`tests.faults.verify`) and re-read
through the sidecar, and every answer is judged (:mod:`tests.faults.judge`).  The run is bounded:
each wait has a deadline, and the whole run ends after ``deadline_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
from llmcache_sidecar import state
from llmcache_sidecar.server import SidecarHandle, serve

from tests.conftest import RedisServer, sidecar_settings
from tests.faults.backends import FlakyEmbedder, MilvusProcess
from tests.faults.faults import FAULTS, Fault, Targets
from tests.faults.judge import Outcome, send, verdict
from tests.faults.verify import EntryCheck, check_entries, exact_keys
from tests.faults.workload import PARAPHRASE_GROUPS, REQUEST_ID_HEADER, Call, Workload
from tests.sidecar.calls import metric_value
from tests.upstream import TestUpstream

CACHE_NAME = "faults"
RESULTS = ("hit-exact", "hit-semantic", "miss", "bypass")
BACKENDS = ("redis", "milvus", "embedder")
PROBE_INTERVAL = 0.05
#: the stored question the semantic probe spells anew each time (the embedder lowercases)
SEMANTIC_ANCHOR = "How many moons does the planet Mars have?"


@dataclass(frozen=True)
class RunConfig:
    fault_seconds: float = 3.0
    quiet_seconds: float = 1.5
    concurrency: int = 12
    #: the sidecar's upstream_timeout_seconds (the timeout fault stalls 1 s longer)
    upstream_timeout: float = 2.0
    #: longest wait for a tier to serve hits again after its backend returned
    recovery_timeout: float = 30.0
    seed: int = 7
    faults: tuple[str, ...] = tuple(FAULTS)

    @classmethod
    def for_duration(cls, seconds: float, **overrides: Any) -> RunConfig:
        """A run whose phases add up to about ``seconds`` (recovery waits come on top)."""
        per_fault = seconds / len(overrides.get("faults", FAULTS))
        return cls(fault_seconds=max(1.0, per_fault * 0.7), quiet_seconds=max(0.5, per_fault * 0.3), **overrides)

    @property
    def deadline_seconds(self) -> float:
        per_fault = self.quiet_seconds + self.fault_seconds + self.recovery_timeout + 15.0
        return 120.0 + len(self.faults) * per_fault


@dataclass
class PhaseResult:
    fault: Fault
    started: float
    injected: float = 0.0
    restored: float = 0.0
    #: the same moment as unix time (to compare with the ``created_at`` of Milvus rows)
    restored_wall: float = 0.0
    ended: float = 0.0
    #: wall-clock seconds from the backend's return to the tier's first hit (None: no tier, or never)
    recovery: float | None = None
    recovered_at: float | None = None
    #: semantic faults: seconds from the backend's return until the tier said it was connected
    reconnect: float | None = None
    #: ``degraded`` of /admin/stats at the end of the fault
    degraded: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # counter deltas over the phase
    upstream_faults: int = 0  # upstream requests a fault acted on


@dataclass
class Report:
    config: RunConfig
    seconds: float
    outcomes: list[Outcome]
    verdicts: list[str]
    phases: list[PhaseResult]
    entries: EntryCheck
    metrics: dict[str, float]  # counters at the end of the load
    injected_embedder_failures: int
    #: bypass answers outside every backend outage (from its start to its tier's recovery)
    unexplained_bypasses: list[Outcome]

    def count(self, verdict_name: str, phase: str | None = None) -> int:
        return sum(1 for o, v in zip(self.outcomes, self.verdicts) if v == verdict_name
                   and (phase is None or o.phase == phase))

    def examples(self, verdict_name: str, limit: int = 5) -> list[str]:
        return [f"{o.call.id} {o.call.kind} stream={o.call.stream} {o.cache}: {o.error or o.content}"
                for o, v in zip(self.outcomes, self.verdicts) if v == verdict_name][:limit]

    def client_results(self) -> Counter[str]:
        """``X-LLMCache`` values the clients saw during the load (the re-read left out)."""
        return Counter(o.cache for o in self.outcomes if o.phase != "reread" and o.cache is not None)


class Suite:
    """One run: ``async with Suite.running(config, workdir) as suite: report = await suite.run()``."""

    def __init__(self, config: RunConfig, targets: Targets, handle: SidecarHandle, client: openai.AsyncOpenAI,
                 http: aiohttp.ClientSession, milvus_uri: str) -> None:
        self.config = config
        self.targets = targets
        self.handle = handle
        self.client = client
        self.http = http
        self.milvus_uri = milvus_uri
        self.workload = Workload(seed=config.seed)
        self.workload.join(SEMANTIC_ANCHOR, SEMANTIC_ANCHOR)
        self.outcomes: list[Outcome] = []
        self.phase = "warm-up"
        self._rng = random.Random(config.seed)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, config: RunConfig, workdir: Path) -> AsyncIterator[Suite]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        (workdir / "redis").mkdir(parents=True, exist_ok=True)
        redis = RedisServer(binary, workdir / "redis")
        milvus = MilvusProcess(workdir / "milvus" / "data")
        try:
            await asyncio.gather(asyncio.to_thread(redis.start), asyncio.to_thread(milvus.start))
            async with TestUpstream(fault_seed=config.seed) as upstream:
                settings = sidecar_settings(
                    upstream.url, workdir, redis_url=redis.url, semantic_enabled=True, milvus_uri=milvus.uri,
                    cache_name=CACHE_NAME, embedding_device="cpu", upstream_timeout_seconds=config.upstream_timeout)
                async with serve(settings) as handle, aiohttp.ClientSession() as http:
                    tier = handle.app[state.SEMANTIC_TIER]
                    assert tier is not None, "the semantic tier did not open"
                    await asyncio.wait_for(tier.wait_loaded(), 60)
                    targets = Targets(redis, milvus, upstream, FlakyEmbedder.install(handle.app),
                                      config.upstream_timeout)
                    client = openai.AsyncOpenAI(base_url=f"{handle.api_url}/v1", api_key="faults", max_retries=0,
                                                timeout=config.upstream_timeout + 30)
                    try:
                        yield cls(config, targets, handle, client, http, milvus.uri)
                    finally:
                        await client.close()
        finally:
            await asyncio.gather(asyncio.to_thread(redis.stop), asyncio.to_thread(milvus.stop))

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> Report:
        started = time.monotonic()
        async with asyncio.timeout(self.config.deadline_seconds):
            await self._warm_up()
            stop = asyncio.Event()
            load = asyncio.gather(*(self._worker(stop) for _ in range(self.config.concurrency)))
            phases: list[PhaseResult] = []
            try:
                for name in self.config.faults:
                    phases.append(await self._phase(FAULTS[name]))
            finally:
                stop.set()
                await load
            end_metrics = await self._metrics()
            self.phase = "reread"
            await self._semantic_flush()
            tier = self.handle.app[state.SEMANTIC_TIER]
            assert tier is not None
            entries = await check_entries(self.targets.redis, self.milvus_uri, self.handle.app[state.SETTINGS],
                                          self.workload.distinct(), set(tier.index.keys_where()))
            await self._reread(entries)
        return self._report(time.monotonic() - started, phases, entries, end_metrics)

    async def _warm_up(self) -> None:
        """Ask every paraphrase group's first question once, so the load finds semantic hits."""
        calls = [self.workload.make("chat", group[0], stream=False, origin="warm-up") for group in PARAPHRASE_GROUPS]
        await self._send_all(calls)
        await self._semantic_flush()

    async def _worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._send(self.workload.next())
            await asyncio.sleep(self._rng.uniform(0.0, 0.02))

    async def _send(self, call: Call) -> Outcome:
        outcome = await send(self.client, call, self.phase)
        self.outcomes.append(outcome)
        return outcome

    async def _send_all(self, calls: list[Call], parallel: int = 16) -> None:
        gate = asyncio.Semaphore(parallel)

        async def one(call: Call) -> None:
            async with gate:
                await self._send(call)

        await asyncio.gather(*(one(call) for call in calls))

    async def _semantic_flush(self) -> None:
        tier = self.handle.app[state.SEMANTIC_TIER]
        assert tier is not None
        await asyncio.wait_for(tier.flush(), 30)

    async def _phase(self, fault: Fault) -> PhaseResult:
        self.phase = fault.name
        result = PhaseResult(fault, time.monotonic())
        before = await self._metrics()
        if fault.tier == "semantic":  # the probe's question, stored in both tiers before the outage
            await self._send(self.workload.make("chat", SEMANTIC_ANCHOR, stream=False, origin="probe"))
            await self._semantic_flush()
        await asyncio.sleep(self.config.quiet_seconds)
        result.injected = time.monotonic()
        await fault.inject(self.targets)
        await asyncio.sleep(self.config.fault_seconds)
        if fault.degraded is not None:
            await self._meet(fault)
            result.degraded = (await self._admin_stats())["degraded"]
        await fault.restore(self.targets)
        result.restored, result.restored_wall = time.monotonic(), time.time()
        if fault.backend == "milvus":
            connected = asyncio.create_task(self._until_connected())
        if fault.tier is not None:
            result.recovered_at = await self._probe(fault)
        if fault.backend == "milvus":
            reconnected = await connected
            result.reconnect = None if reconnected is None else reconnected - result.restored
        if result.recovered_at is not None:
            result.recovery = result.recovered_at - result.restored
        await asyncio.sleep(0.2)  # the calls sent during the fault end
        after = await self._metrics()
        result.metrics = {name: after[name] - before.get(name, 0.0) for name in after}
        result.ended = time.monotonic()
        return result

    async def _meet(self, fault: Fault) -> None:
        """Make sure the sidecar has met the broken backend before /admin/stats is read: one call
        that needs it (a new question; a new spelling of the anchor for the embedder), and for
        Milvus the tier's own health check (every 2 s) noticing the outage."""
        if fault.tier == "exact":
            await self._send(self.workload.make("chat", f"Is Redis there during the {fault.name} fault?",
                                                stream=False, origin="probe"))
        else:
            await self._send(self._semantic_probe())
        if fault.backend == "milvus":
            tier = self.handle.app[state.SEMANTIC_TIER]
            assert tier is not None
            deadline = time.monotonic() + self.config.recovery_timeout
            while tier.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

    def _semantic_probe(self) -> Call:
        """A new spelling of the anchor question: only the semantic tier can answer it."""
        spelling = "".join(c.upper() if self._rng.random() < 0.5 else c.lower() for c in SEMANTIC_ANCHOR)
        self.workload.join(self.workload.group_of(SEMANTIC_ANCHOR), spelling)
        return self.workload.make("chat", spelling, stream=False, origin="probe")

    async def _probe(self, fault: Fault) -> float | None:
        """When the tier ``fault`` took down first served a hit (a call sent after the return)."""
        deadline = time.monotonic() + self.config.recovery_timeout
        wanted = f"hit-{fault.tier}"
        while time.monotonic() < deadline:
            if fault.tier == "exact":
                call = self.workload.make("chat", f"Is the exact tier back after the {fault.name} fault?",
                                          stream=False, origin="probe")
            else:
                call = self._semantic_probe()
            outcome = await self._send(call)
            if outcome.cache == wanted:
                return outcome.ended
            await asyncio.sleep(PROBE_INTERVAL)
        return None

    async def _until_connected(self) -> float | None:
        """When the semantic tier reported itself connected to Milvus again (None: not in time)."""
        tier = self.handle.app[state.SEMANTIC_TIER]
        assert tier is not None
        deadline = time.monotonic() + self.config.recovery_timeout
        while not tier.connected:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return time.monotonic()

    async def _reread(self, entries: EntryCheck) -> None:
        """Every whole entry, asked for again as JSON and as a stream: each must be a right hit."""
        keys = exact_keys(self.handle.app[state.SETTINGS], self.workload.distinct())
        calls = [self.workload.again(keys[key], stream=stream, origin="reread")
                 for key in sorted(entries.good_keys) for stream in (False, True)]
        await self._send_all(calls)

    # -- observing the sidecar -----------------------------------------------------------------

    async def _metrics(self) -> dict[str, float]:
        async with self.http.get(f"{self.handle.metrics_url}/metrics") as response:
            text = await response.text()
        values = {f"result:{r}": metric_value(text, "llmcache_requests_total", result=r) for r in RESULTS}
        values.update({f"errors:{b}": metric_value(text, "llmcache_backend_errors_total", backend=b)
                       for b in BACKENDS})
        return values

    async def _admin_stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.handle.metrics_url}/admin/stats") as response:
            payload: dict[str, Any] = await response.json()
            return payload

    # -- judging -------------------------------------------------------------------------------

    def _report(self, seconds: float, phases: list[PhaseResult], entries: EntryCheck,
                metrics: dict[str, float]) -> Report:
        applied = {r.headers.get(REQUEST_ID_HEADER): r.faults for r in self.targets.upstream.requests}
        for phase in phases:
            phase.upstream_faults = sum(
                1 for o in self.outcomes if o.phase == phase.fault.name and applied.get(o.call.id))
        verdicts = [verdict(o, applied.get(o.call.id) or [], self.workload) for o in self.outcomes]
        windows = [(p.injected, p.recovered_at or p.ended) for p in phases if p.fault.tier is not None]
        unexplained = [o for o in self.outcomes if o.cache == "bypass"
                       and not any(o.started <= end and o.ended >= start for start, end in windows)]
        return Report(self.config, seconds, self.outcomes, verdicts, phases, entries, metrics,
                      self.targets.embedder.failed_texts, unexplained)


async def run_suite(config: RunConfig, workdir: Path) -> Report:
    async with Suite.running(config, workdir) as suite:
        return await suite.run()
