"""The real operator (kopf, ``run_operator`` as ``llmcache-operator`` runs it) against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import yaml
from llmcache_operator import kube, names
from llmcache_operator.settings import OperatorConfig

from tests.operator.conftest import NAMESPACE, OTHER_NAMESPACE, Cluster, StartOperator

MODEL = {"name": "meta-llama/Llama-3.1-8B-Instruct", "revision": "2024-09-25"}
SPEC: dict[str, Any] = {"model": MODEL}
EXTERNAL: dict[str, Any] = {
    "model": MODEL,
    "vllm": {"external": {"url": "http://vllm.example:8000"}},
    "redis": {"mode": "external", "url": "redis://redis.example:6379/0"},
    "milvus": {"mode": "external", "uri": "http://milvus.example:19530"},
}
CHILDREN = [
    (kube.CONFIGMAPS, "demo-sidecar"), (kube.STATEFULSETS, "demo-redis"), (kube.SERVICES, "demo-redis"),
    (kube.STATEFULSETS, "demo-milvus"), (kube.SERVICES, "demo-milvus"),
    (kube.DEPLOYMENTS, "demo-vllm-2024-09-25"), (kube.SERVICES, "demo-vllm"),
    (kube.SECRETS, "demo-admin"), (kube.SECRETS, "demo-redis"),
]
WRITES = ("create", "patch", "delete")


def condition(cache: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in cache.get("status", {}).get("conditions", []) if c["type"] == type_)


def phase_is(cluster: Cluster, name: str, phase: str) -> Any:
    return lambda: cluster.cache(name).get("status", {}).get("phase") == phase


def child_writes(cluster: Cluster) -> list[Any]:
    children = (kube.DEPLOYMENTS, kube.STATEFULSETS, kube.SERVICES, kube.CONFIGMAPS, kube.SECRETS)
    return [call for verb in WRITES for res in children for call in cluster.calls(verb, res)]


async def provisioned(cluster: Cluster, spec: dict[str, Any] = SPEC, name: str = "demo") -> dict[str, Any]:
    await cluster.create_cache(name, spec)
    await cluster.wait_for(lambda: cluster.cache(name).get("status", {}).get("observedGeneration") == 1,
                           what="the first reconcile")
    await cluster.settle()
    return cluster.cache(name)


async def test_create_provisions_every_child_owned_and_labelled(cluster: Cluster, operator: None) -> None:
    cache = await provisioned(cluster)
    uid = cache["metadata"]["uid"]
    for res, name in CHILDREN:
        child = cluster.obj(res, name)
        assert child is not None, f"{res.kind} {name} missing"
        owners = child["metadata"]["ownerReferences"]
        assert owners == [{"apiVersion": names.API_VERSION, "kind": names.KIND, "name": "demo", "uid": uid,
                           "controller": True, "blockOwnerDeletion": True}]
        assert child["metadata"]["labels"][names.MANAGED_BY_LABEL] == "llmcache-operator"
        assert child["metadata"]["labels"][names.CACHE_LABEL] == "demo"
    deployment = cluster.obj(kube.DEPLOYMENTS, "demo-vllm-2024-09-25")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["--model", MODEL["name"]] and "--enable-prefix-caching" in args
    service = cluster.obj(kube.SERVICES, "demo-vllm")
    assert service["spec"]["selector"][names.REVISION_LABEL] == "2024-09-25"
    config = yaml.safe_load(cluster.obj(kube.CONFIGMAPS, "demo-sidecar")["data"]["config.yaml"])
    assert config["model_revision"] == "2024-09-25" and config["cache_name"] == "demo"
    status = cache["status"]
    assert status["phase"] == "Provisioning" and status["activeRevision"] == "2024-09-25"
    assert status["endpoints"] == {"redis": "redis://demo-redis.apps.svc:6379/0",
                                   "milvus": "http://demo-milvus.apps.svc:19530",
                                   "vllm": "http://demo-vllm.apps.svc:8000"}
    assert condition(cache, "Ready")["status"] == "False"
    assert condition(cache, "VLLMReady")["message"] == "Deployment demo-vllm-2024-09-25: 0/1 replicas ready"


async def test_ready_children_make_the_cache_ready_and_a_lost_one_degrades_it(
    cluster: Cluster, operator: None,
) -> None:
    await provisioned(cluster)
    await cluster.make_ready(kube.STATEFULSETS, "demo-redis")
    await cluster.wait_for(lambda: condition(cluster.cache("demo"), "RedisReady")["status"] == "True",
                           what="RedisReady")
    assert cluster.cache("demo")["status"]["phase"] == "Provisioning"
    await cluster.make_ready(kube.STATEFULSETS, "demo-milvus")
    await cluster.make_ready(kube.DEPLOYMENTS, "demo-vllm-2024-09-25")
    await cluster.wait_for(phase_is(cluster, "demo", "Ready"), what="phase Ready")
    cache = cluster.cache("demo")
    assert all(condition(cache, t)["status"] == "True" for t in ("Ready", "RedisReady", "MilvusReady", "VLLMReady"))
    await cluster.patch_object(kube.DEPLOYMENTS, "demo-vllm-2024-09-25", {"status": {"readyReplicas": 0}})
    await cluster.wait_for(phase_is(cluster, "demo", "Degraded"), what="phase Degraded")
    assert condition(cluster.cache("demo"), "Ready")["message"] == "waiting for VLLMReady"


async def test_spec_changes_patch_only_the_children_they_change(cluster: Cluster, operator: None) -> None:
    await provisioned(cluster)
    before = len(child_writes(cluster))
    await cluster.patch_cache("demo", {"vllm": {"replicas": 3, "image": "vllm/vllm-openai:v0.7.0"},
                                       "cache": {"semantic": {"threshold": 0.85}}})
    await cluster.wait_for(lambda: cluster.cache("demo")["status"].get("observedGeneration") == 2,
                           what="the update")
    await cluster.settle()
    deployment = cluster.obj(kube.DEPLOYMENTS, "demo-vllm-2024-09-25")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "vllm/vllm-openai:v0.7.0"
    config = yaml.safe_load(cluster.obj(kube.CONFIGMAPS, "demo-sidecar")["data"]["config.yaml"])
    assert config["similarity_threshold"] == 0.85
    patched = {call.name for call in child_writes(cluster)[before:]}
    assert patched == {"demo-vllm-2024-09-25", "demo-sidecar"}
    assert all(call.action.value == "UPDATE" for call in child_writes(cluster)[before:])


async def test_a_restart_resumes_without_writing_anything(
    cluster: Cluster, start_operator: StartOperator,
) -> None:
    await start_operator()
    await provisioned(cluster)
    writes = len(child_writes(cluster))
    status_writes = len(cluster.calls("patch", kube.LLMCACHES))
    await start_operator()  # a second operator process resumes the same objects
    await cluster.settle()
    assert len(child_writes(cluster)) == writes
    assert [c for c in cluster.calls("patch", kube.LLMCACHES)[status_writes:] if c.subresource == "status"] == []


async def test_external_backends_provision_nothing(cluster: Cluster, operator: None) -> None:
    await cluster.create_cache("ext", EXTERNAL)
    await cluster.wait_for(phase_is(cluster, "ext", "Ready"), what="phase Ready")
    await cluster.settle()
    assert cluster.names(kube.STATEFULSETS) == set()
    assert cluster.names(kube.DEPLOYMENTS) == set()
    assert cluster.names(kube.SERVICES) == set()
    assert cluster.names(kube.CONFIGMAPS) == {"ext-sidecar"}
    assert cluster.names(kube.SECRETS) == {"ext-admin"}
    cache = cluster.cache("ext")
    assert condition(cache, "RedisReady")["reason"] == "External"
    config = yaml.safe_load(cluster.obj(kube.CONFIGMAPS, "ext-sidecar")["data"]["config.yaml"])
    assert config["upstream_url"] == "http://vllm.example:8000"
    assert config["redis_url"] == "redis://redis.example:6379/0"


async def test_switching_vllm_to_external_removes_the_managed_deployment(cluster: Cluster, operator: None) -> None:
    await provisioned(cluster)
    await cluster.patch_cache("demo", {"vllm": {"external": {"url": "http://vllm.example:8000"}}})
    await cluster.wait_for(lambda: cluster.names(kube.DEPLOYMENTS) == set(), what="the Deployment removed")


async def test_an_invalid_spec_fails_with_a_message_and_an_event_and_creates_nothing(
    cluster: Cluster, operator: None,
) -> None:
    # Caught by a CEL rule on a real API server, which the emulator does not evaluate.
    await cluster.create_cache("bad", {"model": MODEL, "redis": {"mode": "external"}})
    await cluster.wait_for(phase_is(cluster, "bad", "Failed"), what="phase Failed")
    ready = condition(cluster.cache("bad"), "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert "spec.redis: mode external needs url" in ready["message"]
    events = await cluster.wait_for(lambda: cluster.events("InvalidSpec"), what="an InvalidSpec Event")
    assert "spec.redis: mode external needs url" in events[0]["message"]
    assert events[0]["type"] == "Warning" and events[0]["involvedObject"]["name"] == "bad"
    await cluster.settle()
    assert child_writes(cluster) == []
    # Fixing the spec recovers.
    await cluster.patch_cache("bad", {"redis": {"mode": "managed"}})
    await cluster.wait_for(phase_is(cluster, "bad", "Provisioning"), what="phase Provisioning")
    assert cluster.obj(kube.STATEFULSETS, "bad-redis") is not None


async def test_a_revision_change_creates_the_new_revisions_deployment(cluster: Cluster, operator: None) -> None:
    """The part every rollout strategy shares (when the Service switches is the rollout's business)."""
    await provisioned(cluster)
    await cluster.patch_cache("demo", {"model": {"revision": "2024-10-01"}})
    new = await cluster.wait_for(lambda: cluster.obj(kube.DEPLOYMENTS, "demo-vllm-2024-10-01"),
                                 what="the new revision's Deployment")
    assert new["spec"]["template"]["metadata"]["labels"][names.REVISION_LABEL] == "2024-10-01"
    assert new["metadata"]["annotations"][names.MODEL_REVISION_ANNOTATION] == "2024-10-01"
    assert new["metadata"]["ownerReferences"][0]["uid"] == cluster.cache("demo")["metadata"]["uid"]


async def test_delete_releases_the_finalizer(cluster: Cluster, operator: None) -> None:
    cache = await provisioned(cluster)
    assert "llmcache.dev/finalizer" in cache["metadata"]["finalizers"]
    await cluster.delete_cache("demo")
    await cluster.wait_for(lambda: cluster.obj(kube.LLMCACHES, "demo") is None, what="the LLMCache gone")


async def test_only_the_declared_api_calls_are_made(cluster: Cluster, operator: None) -> None:
    await provisioned(cluster)
    await cluster.make_ready(kube.DEPLOYMENTS, "demo-vllm-2024-09-25")
    await cluster.patch_cache("demo", {"model": {"revision": "r2"}, "vllm": {"replicas": 2}})
    await cluster.wait_for(lambda: "demo-vllm-r2" in cluster.names(kube.DEPLOYMENTS), what="the new revision")
    await cluster.create_cache("bad", {"model": MODEL, "milvus": {"mode": "external"}})
    await cluster.wait_for(lambda: cluster.events("InvalidSpec"), what="an Event")
    await cluster.delete_cache("demo")
    await cluster.wait_for(lambda: cluster.obj(kube.LLMCACHES, "demo") is None, what="the deletion")
    made = cluster.api_calls()
    assert made <= kube.API_CALLS, f"calls missing from kube.API_CALLS: {made - kube.API_CALLS}"
    assert {("create", "apps", "deployments"), ("patch", names.GROUP, "llmcaches/status"),
            ("create", "", "events")} <= made


async def test_stats_are_copied_from_the_shared_redis_hash(
    cluster: Cluster, start_operator: StartOperator, redis_server: Any,
) -> None:
    await start_operator(config=OperatorConfig(stats_interval_seconds=0.3))
    redis_server.client().hset(names.stats_key("ext"), mapping={
        "requests": 40, "hitsExact": 10, "hitsSemantic": 6, "tokensSaved": 1234,
    })
    spec = {**EXTERNAL, "redis": {"mode": "external", "url": redis_server.url}}
    await cluster.create_cache("ext", spec)
    stats = await cluster.wait_for(lambda: cluster.cache("ext").get("status", {}).get("stats"), what="stats")
    assert stats == {"requests": 40, "hitsExact": 10, "hitsSemantic": 6, "tokensSaved": 1234, "hitRatio": 0.4}
    redis_server.client().hincrby(names.stats_key("ext"), "requests", 10)
    await cluster.wait_for(lambda: cluster.cache("ext")["status"]["stats"]["requests"] == 50, what="new stats")
    assert cluster.cache("ext")["status"]["stats"]["hitRatio"] == 0.32


async def test_an_unreachable_redis_never_fails_the_cache(cluster: Cluster, start_operator: StartOperator) -> None:
    await start_operator(config=OperatorConfig(stats_interval_seconds=0.3))
    spec = {**EXTERNAL, "redis": {"mode": "external", "url": "redis://127.0.0.1:1/0"}}
    await cluster.create_cache("ext", spec)
    await cluster.wait_for(phase_is(cluster, "ext", "Ready"), what="phase Ready")
    await cluster.settle()
    assert "stats" not in cluster.cache("ext")["status"]
    assert cluster.cache("ext")["status"]["phase"] == "Ready"


async def test_a_namespaced_operator_leaves_other_namespaces_alone(
    cluster: Cluster, start_operator: StartOperator,
) -> None:
    other = Cluster(cluster.emulator, OTHER_NAMESPACE)
    await start_operator(namespaces=[NAMESPACE])
    await other.create_cache("theirs", SPEC)
    await provisioned(cluster)  # ours, in the served namespace
    assert cluster.obj(kube.CONFIGMAPS, "demo-sidecar") is not None
    assert "status" not in other.cache("theirs")
    assert other.names(kube.CONFIGMAPS) == set()


async def test_a_storage_change_a_statefulset_cannot_take_fails_before_writing(
    cluster: Cluster, operator: None,
) -> None:
    await provisioned(cluster)
    before = len(child_writes(cluster))
    await cluster.patch_cache("demo", {"redis": {"storage": "20Gi"}, "vllm": {"replicas": 2}})
    await cluster.wait_for(phase_is(cluster, "demo", "Failed"), what="phase Failed")
    message = condition(cluster.cache("demo"), "Ready")["message"]
    assert "StatefulSet demo-redis: volumeClaimTemplates cannot change" in message
    await cluster.settle()
    assert child_writes(cluster)[before:] == []  # not even the valid replicas change: all or nothing
    assert cluster.obj(kube.DEPLOYMENTS, "demo-vllm-2024-09-25")["spec"]["replicas"] == 1


async def test_the_liveness_endpoint_answers(cluster: Cluster, start_operator: StartOperator) -> None:
    import aiohttp

    from tests.conftest import free_port

    port = free_port()
    await start_operator(liveness=f"http://127.0.0.1:{port}/healthz")
    statuses: list[int] = []

    async def probe() -> None:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
            statuses.append(response.status)

    for _ in range(100):  # the probe server starts beside the watchers
        try:
            await probe()
            break
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.1)
    assert statuses == [200]


async def test_a_deleted_child_comes_back(cluster: Cluster, operator: None) -> None:
    cache = await provisioned(cluster)
    async with cluster.emulator.delete(kube.DEPLOYMENTS.path("apps", "demo-vllm-2024-09-25")) as response:
        assert response.status == 200
    recreated = await cluster.wait_for(lambda: cluster.obj(kube.DEPLOYMENTS, "demo-vllm-2024-09-25"),
                                       what="the Deployment recreated")
    assert recreated["metadata"]["ownerReferences"][0]["uid"] == cache["metadata"]["uid"]


async def test_the_console_script_runs_the_operator(cluster: Cluster, tmp_path: Any) -> None:
    """``llmcache-operator`` itself, as a process: logs in from KUBECONFIG, reconciles, stops on SIGTERM."""
    import os
    import shutil
    import signal

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "k",
        "clusters": [{"name": "k", "cluster": {"server": str(cluster.emulator.url).rstrip("/")}}],
        "users": [{"name": "k", "user": {"token": "t"}}],
        "contexts": [{"name": "k", "context": {"cluster": "k", "user": "k"}}],
    }))
    script = shutil.which("llmcache-operator")
    assert script, "pip install -e . first"
    process = await asyncio.create_subprocess_exec(
        script, "--namespace", "apps", env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await cluster.create_cache("demo", SPEC)
        await cluster.wait_for(lambda: cluster.obj(kube.CONFIGMAPS, "demo-sidecar"), timeout=30,
                               what="the ConfigMap from the process")
        await cluster.wait_for(lambda: cluster.cache("demo").get("status", {}).get("phase") == "Provisioning",
                               what="status from the process")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()[-2000:]
