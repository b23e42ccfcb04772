"""Fixtures of the rollout tests: the real operator on the emulator (helper C's harness), a real
Redis, a Milvus Lite server both sidecars and the operator reach over gRPC (helper B's), the test
upstream, and sidecars as real ``llmcache-sidecar`` processes configured by the operator's
ConfigMap.

:class:`ServiceRouting` stands in for kube-proxy: the test upstream answers as the revision
whose pods the ``<cache>-vllm`` Service selects, so an answer names the revision that made it.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmcache_operator import kube, names
from llmcache_operator.settings import OperatorConfig
from tests.conftest import free_port
from tests.operator import conftest as operator_harness
from tests.operator.conftest import Cluster, StartOperator
from tests.semantic import conftest as semantic_fixtures
from tests.semantic.conftest import MilvusServer
from tests.upstream import TestUpstream

# C's harness (kopf on kmock) and B's Milvus Lite server, made visible to the tests in this folder.
kmock_options = operator_harness.kmock_options
emulator = operator_harness.emulator
cluster = operator_harness.cluster
start_operator = operator_harness.start_operator
milvus_server = semantic_fixtures.milvus_server

CACHE = "demo"
REV_A, REV_B = "rev-a", "rev-b"
SCRIPT = shutil.which("llmcache-sidecar")
#: quick rollout checks for the tests (production: every 10 s)
FAST = OperatorConfig(rollout_check_seconds=0.3, rollout_propagation_seconds=0.2, stats_interval_seconds=3600)


def cache_spec(redis_url: str, milvus_uri: str, revision: str = REV_A, **extra: Any) -> dict[str, Any]:
    """A managed vLLM with the test's Redis and Milvus as external backends (the operator and
    the sidecars must both reach them)."""
    return {
        "model": {"name": "test-model", "revision": revision},
        "redis": {"mode": "external", "url": redis_url},
        "milvus": {"mode": "external", "uri": milvus_uri},
        **extra,
    }


def vllm(revision: str) -> str:
    return names.vllm_deployment_name(CACHE, revision)


class ServiceRouting:
    """kube-proxy for the test upstream: it answers as the revision the vLLM Service selects."""

    def __init__(self, cluster: Cluster, upstream: TestUpstream) -> None:
        self.cluster = cluster
        self.upstream = upstream
        self._task: asyncio.Task[None] | None = None

    def selected_revision(self) -> str | None:
        service = self.cluster.obj(kube.SERVICES, names.vllm_service_name(CACHE))
        if service is None:
            return None
        slug = service["spec"]["selector"].get(names.REVISION_LABEL)
        for name in self.cluster.names(kube.DEPLOYMENTS):
            deployment = self.cluster.obj(kube.DEPLOYMENTS, name) or {}
            if deployment.get("metadata", {}).get("labels", {}).get(names.REVISION_LABEL) == slug:
                return deployment["metadata"]["annotations"][names.MODEL_REVISION_ANNOTATION]
        return None

    async def _follow(self) -> None:
        while True:
            revision = self.selected_revision()
            if revision is not None:
                self.upstream.revision = revision
            await asyncio.sleep(0.01)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class SidecarProcess:
    process: asyncio.subprocess.Process
    api_url: str
    metrics_url: str
    log: Path

    async def stats(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(f"{self.metrics_url}/admin/stats") as response:
            assert response.status == 200, await response.text()
            return await response.json()

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` (a function, or a coroutine function) until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class RolloutWorld:
    cluster: Cluster
    upstream: TestUpstream
    redis: Any
    milvus: MilvusServer
    routing: ServiceRouting
    http: aiohttp.ClientSession
    tmp_path: Path
    sidecars: list[SidecarProcess]

    def config_file(self) -> Path:
        """The sidecar ConfigMap's ``config.yaml``, as kubelet would mount it."""
        configmap = self.cluster.obj(kube.CONFIGMAPS, names.sidecar_configmap_name(CACHE))
        assert configmap is not None, "the operator has not written the sidecar ConfigMap"
        path = self.tmp_path / f"config-{len(self.sidecars)}.yaml"
        path.write_text(configmap["data"]["config.yaml"])
        return path

    async def start_sidecar(self) -> SidecarProcess:
        """The real ``llmcache-sidecar`` console script, configured like an injected sidecar: the
        ConfigMap's file, plus what a pod would give it (the upstream reached through the Service
        stand-in, its own ports, CPU embeddings)."""
        assert SCRIPT is not None
        api_port, metrics_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCACHE_")}
        env.update({
            "LLMCACHE_CONFIG": str(self.config_file()),
            "LLMCACHE_UPSTREAM_URL": self.upstream.url,
            "LLMCACHE_LISTEN": f"127.0.0.1:{api_port}",
            "LLMCACHE_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            "LLMCACHE_EMBEDDING_DEVICE": "cpu",
            "LLMCACHE_LOG_LEVEL": "info",
        })
        log = self.tmp_path / f"sidecar-{len(self.sidecars)}.log"
        out = log.open("wb")
        try:
            process = await asyncio.create_subprocess_exec(SCRIPT, env=env, stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()
        sidecar = SidecarProcess(process, f"http://127.0.0.1:{api_port}/v1", f"http://127.0.0.1:{metrics_port}", log)
        self.sidecars.append(sidecar)

        async def ready() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"llmcache-sidecar exited: {log.read_text()[-3000:]}")
            try:
                stats = await sidecar.stats(self.http)
            except aiohttp.ClientError:
                return False
            # the semantic tier stores nothing until its first load from Milvus is done
            return not stats["degraded"] and "entries loaded from milvus" in log.read_text()

        await wait_until(ready, timeout=60, what="the sidecar process to serve with both tiers")
        return sidecar

    async def revisions(self) -> list[str]:
        return [(await sidecar.stats(self.http))["revision"] for sidecar in self.sidecars]

    def status(self) -> dict[str, Any]:
        return self.cluster.cache(CACHE).get("status", {})


@pytest.fixture
async def upstream() -> AsyncIterator[TestUpstream]:
    async with TestUpstream(revision=REV_A) as server:
        yield server


@pytest.fixture
def operator_config() -> OperatorConfig:
    """The operator's settings for ``world`` (override the fixture to change them)."""
    return FAST


@pytest.fixture
async def world(cluster: Cluster, start_operator: StartOperator, operator_config: OperatorConfig,
                upstream: TestUpstream, redis_server: Any, milvus_server: MilvusServer,
                tmp_path: Path) -> AsyncIterator[RolloutWorld]:
    """The operator running, the cache ``demo`` provisioned at revision A (its Deployment ready)
    and traffic routed to it; no sidecar yet (``await world.start_sidecar()``)."""
    if SCRIPT is None:
        pytest.skip("llmcache-sidecar not installed (pip install -e .)")
    await start_operator(config=operator_config)
    await cluster.create_cache(CACHE, cache_spec(redis_server.url, milvus_server.uri))
    await cluster.wait_for(lambda: cluster.obj(kube.DEPLOYMENTS, vllm(REV_A)), what="revision A's Deployment")
    await cluster.make_ready(kube.DEPLOYMENTS, vllm(REV_A))
    await cluster.wait_for(lambda: cluster.cache(CACHE).get("status", {}).get("phase") == "Ready", what="Ready")
    routing = ServiceRouting(cluster, upstream)
    routing.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        world = RolloutWorld(cluster, upstream, redis_server, milvus_server, routing, http, tmp_path, [])
        try:
            yield world
        finally:
            for sidecar in world.sidecars:
                await sidecar.stop()
            await routing.stop()
