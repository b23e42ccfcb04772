"""The whole user journey on a real cluster.

helm install the chart -> apply an LLMCache in front of an OpenAI-compatible test server ->
deploy an annotated app -> the sidecar is injected -> the same call twice is `miss` then
`hit-exact` -> a new model revision removes the old revision's entries -> deleting the cache
removes every child -> helm uninstall removes the operator and its webhook (the CRD is kept).
"""

from __future__ import annotations

import json
import os

from e2e.cluster import Kubectl, wait_until
from e2e.conftest import CRD, RELEASE, SLOW, Images, Namespaces, Release
from e2e.workloads import (
    APP_NAME,
    CACHE_NAME,
    CALL_SCRIPT,
    UPSTREAM_NAME,
    app,
    llmcache,
    upstream_objects,
)

CHILD_KINDS = "statefulsets,deployments,services,configmaps,secrets,pods"
CACHE_SELECTOR = f"llmcache.dev/cache={CACHE_NAME}"


def call_through_sidecar(kubectl: Kubectl, namespace: str, pod: str) -> dict[str, str]:
    output = kubectl("exec", "-n", namespace, pod, "-c", "app", "--", "python", "-c", CALL_SCRIPT, timeout=180)
    return json.loads(output.strip().splitlines()[-1])


def redis_keys(kubectl: Kubectl, namespace: str, pattern: str) -> list[str]:
    """Keys in the cache's managed Redis (the container has REDISCLI_AUTH from the Secret)."""
    output = kubectl("exec", "-n", namespace, f"{CACHE_NAME}-redis-0", "--", "redis-cli", "--scan", "--pattern", pattern)
    return [line for line in output.splitlines() if line.strip()]


def cache_status(kubectl: Kubectl, namespace: str) -> dict:
    return kubectl.json("get", "llmcache", CACHE_NAME, "-n", namespace).get("status") or {}


def test_install_inject_hit_rollout_and_uninstall(
    kubectl: Kubectl, images: Images, namespaces: Namespaces, release: Release,
) -> None:
    system, apps = namespaces.system, namespaces.apps
    managed_milvus = os.environ.get("LLMCACHE_E2E_MANAGED_MILVUS") == "1"

    # 1. The operator runs, its webhook is registered.
    operator = release.one("Deployment")["metadata"]["name"]
    kubectl("rollout", "status", "-n", system, f"deployment/{operator}", "--timeout=300s", timeout=320)
    configuration = release.one("MutatingWebhookConfiguration")["metadata"]["name"]
    wait_until(lambda: kubectl.json("get", "mutatingwebhookconfiguration", configuration).get("webhooks"),
               timeout=120, what="the operator to register its webhook")

    # 2. The test server and a cache in front of it.
    kubectl.apply(*upstream_objects(apps, images.sidecar))
    kubectl("rollout", "status", "-n", apps, f"deployment/{UPSTREAM_NAME}", "--timeout=300s", timeout=320)
    kubectl.apply(llmcache(apps, "r1", managed_milvus))
    wait_until(lambda: cache_status(kubectl, apps).get("phase") == "Ready", timeout=SLOW, what="the LLMCache to be Ready")

    # 3. An app that asks for the sidecar gets it.
    kubectl.apply(app(apps, images.sidecar))
    kubectl("rollout", "status", "-n", apps, f"deployment/{APP_NAME}", "--timeout=300s", timeout=320)
    (pod,) = kubectl.json("get", "pods", "-n", apps, "-l", f"app.kubernetes.io/name={APP_NAME}")["items"]
    assert pod["metadata"].get("annotations", {}).get("llmcache.dev/injected") == "true", "the pod was not injected"
    containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    assert "llmcache-sidecar" in [c["name"] for c in containers], "the sidecar was not injected"
    (app_container,) = [c for c in pod["spec"]["containers"] if c["name"] == "app"]
    assert {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:8080/v1"} in app_container["env"]
    pod_name = pod["metadata"]["name"]

    # 4. The same call twice: the second is answered from the exact tier.
    first = call_through_sidecar(kubectl, apps, pod_name)
    second = call_through_sidecar(kubectl, apps, pod_name)
    assert (first["x_llmcache"], second["x_llmcache"]) == ("miss", "hit-exact")
    assert first["content"] == second["content"]
    assert redis_keys(kubectl, apps, f"llmcache:{CACHE_NAME}:r1:*"), "the answer was not stored in Redis"

    # 5. A new model revision: the old revision's entries are gone, and not served.
    kubectl("patch", "llmcache", CACHE_NAME, "-n", apps, "--type", "merge", "-p", json.dumps({"spec": {"model": {"revision": "r2"}}}))
    wait_until(lambda: cache_status(kubectl, apps).get("activeRevision") == "r2", timeout=300, what="revision r2 to be active")
    wait_until(lambda: any(i.get("revision") == "r1" for i in cache_status(kubectl, apps).get("invalidations", [])),
               timeout=120, what="the invalidation of r1 in status.invalidations")
    assert redis_keys(kubectl, apps, f"llmcache:{CACHE_NAME}:r1:*") == []
    after = wait_until(lambda: call_through_sidecar(kubectl, apps, pod_name), timeout=60, what="a call after the rollout")
    assert after["x_llmcache"] == "miss", "an answer of the old revision was served"
    assert call_through_sidecar(kubectl, apps, pod_name)["x_llmcache"] == "hit-exact"
    assert redis_keys(kubectl, apps, f"llmcache:{CACHE_NAME}:r2:*"), "the new answer is not stored under r2"

    # 6. Deleting the cache removes every child.
    kubectl("delete", "deployment", APP_NAME, "-n", apps, "--wait=true", "--timeout=120s", timeout=150)
    kubectl("delete", "llmcache", CACHE_NAME, "-n", apps, "--wait=true", "--timeout=120s", timeout=150)
    wait_until(lambda: not kubectl.labelled(CHILD_KINDS, CACHE_SELECTOR, apps), timeout=180, what="every child of the cache to go")

    # 7. helm uninstall removes everything the chart created (the operator, its webhook
    #    configuration and TLS Secret, the RBAC) but the CRD.
    release.helm.uninstall(RELEASE, wait="watcher", timeout=300)
    wait_until(lambda: not kubectl.exists("deployment", operator, system), timeout=180, what="the operator to go")
    for obj in release.objects:
        kind, name, namespace = obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")
        if kind == "CustomResourceDefinition":
            continue
        assert not kubectl.exists(kind.lower(), name, namespace), f"{kind}/{name} is left after helm uninstall"
    assert kubectl.exists("crd", CRD), "the CRD must be kept (helm.sh/resource-policy: keep)"
