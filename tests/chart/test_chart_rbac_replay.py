"""Replay every request the real operator sends against the chart's RBAC.

The operator (real kopf, ``llmcache_operator.__main__.run_operator`` with the handlers and the
injection webhook) runs against kmock's emulator (the harness of tests/operator) with the
flags' meaning and the environment the chart renders; it provisions, rolls out and deletes
LLMCaches and sets up its webhook. Every request the emulator received must be one the API
server would allow the chart's ServiceAccount.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmcache_operator import certs, kube, names
from llmcache_operator.__main__ import HANDLER_MODULES
from llmcache_operator.settings import OperatorConfig
from tests.chart.helmchart import NAMESPACE, RELEASE, VALUE_SETS, container_env, manifests, operator_container
from tests.chart.rbac import Authorizer, request_from_http
from tests.conftest import RedisServer
from tests.operator.conftest import NAMESPACE as APP_NAMESPACE
from tests.operator.conftest import Cluster, StartOperator, cluster, emulator, kmock_options, resource_key, start_operator  # noqa: F401

ACCOUNT = f"{RELEASE}-llmcache-operator"
#: The token of the kubeconfig tests/operator's ``start_operator`` writes.
OPERATOR_TOKEN = "test-token"
#: Everything managed but the model server: the operator creates Redis, Milvus, Secrets.
STORE = {"model": {"name": "org/model", "revision": "r1"}, "vllm": {"external": {"url": "http://vllm.elsewhere.svc:8000"}}}


def rolling(redis_url: str, milvus_uri: str) -> dict[str, Any]:
    """A managed vLLM whose rollout can complete: invalidation needs a reachable Redis and Milvus."""
    return {
        "model": {"name": "org/model", "revision": "r1"}, "vllm": {"gpus": 0},
        "redis": {"mode": "external", "url": redis_url}, "milvus": {"mode": "external", "uri": milvus_uri},
    }


def operator_environment(values: dict[str, Any], cert_dir: Path) -> dict[str, str]:
    """The chart's environment, with a free loopback port and a temp dir for the webhook.

    Outside self-signed mode the chart mounts the certificate Secret at the cert dir: the files
    cert-manager would write are put there.
    """
    env = container_env(operator_container(manifests(values)))
    env["LLMCACHE_WEBHOOK_LISTEN"] = "127.0.0.1:0"
    env["LLMCACHE_WEBHOOK_CERT_DIR"] = str(cert_dir)
    if env["LLMCACHE_WEBHOOK_CERT_MODE"] != "self-signed":
        bundle = certs.generate(certs.service_dns_names(env["LLMCACHE_WEBHOOK_SERVICE"], NAMESPACE))
        cert_dir.mkdir(parents=True)
        for key, data in {certs.CERT_KEY: bundle.cert, certs.KEY_KEY: bundle.key, certs.CA_CERT_KEY: bundle.ca_cert}.items():
            (cert_dir / key).write_bytes(data)
    return env


def exists(cluster: Cluster, res: kube.Resource, name: str) -> bool:
    return cluster.obj(res, name, APP_NAMESPACE) is not None


async def exercise(cluster: Cluster, redis_url: str, milvus_uri: str) -> None:
    """Create caches, make their workloads ready, roll one out to a new revision."""
    await cluster.create_cache("store", STORE)
    await cluster.create_cache("roll", rolling(redis_url, milvus_uri))
    first = names.vllm_deployment_name("roll", "r1")
    for res, name in ((kube.STATEFULSETS, names.redis_name("store")), (kube.STATEFULSETS, names.milvus_name("store")), (kube.DEPLOYMENTS, first)):
        await cluster.wait_for(lambda res=res, name=name: exists(cluster, res, name), what=name)
        await cluster.make_ready(res, name)
    await cluster.settle()
    await cluster.patch_cache("roll", {"model": {"revision": "r2"}})
    second = names.vllm_deployment_name("roll", "r2")
    await cluster.wait_for(lambda: exists(cluster, kube.DEPLOYMENTS, second), what="the new revision's Deployment")
    await cluster.make_ready(kube.DEPLOYMENTS, second)
    await cluster.wait_for(lambda: not exists(cluster, kube.DEPLOYMENTS, first), timeout=30, what="the old revision's Deployment to go")
    await cluster.settle()


# Cluster-wide only: with --namespace kopf lists /api/v1/namespaces, a path kmock 0.8 cannot
# parse (500); the namespace-scoped RBAC is checked against kube.py's table in test_chart_rbac.
@pytest.mark.parametrize("value_set", ["defaults", "cert-manager"])
async def test_every_request_of_the_running_operator_is_allowed(
    value_set: str, cluster: Cluster, start_operator: StartOperator, redis_server: RedisServer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = VALUE_SETS[value_set]
    cluster.serve(kube.MUTATING_WEBHOOK_CONFIGURATIONS, namespaced=False)
    env = operator_environment(values, tmp_path / "webhook")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    watched = values.get("operator", {}).get("watchNamespaces", ())
    # What Helm creates before the operator starts: the webhook configuration and TLS Secret shells.
    for obj in manifests(values):
        if obj["kind"] in ("MutatingWebhookConfiguration", "Secret"):
            res = kube.MUTATING_WEBHOOK_CONFIGURATIONS if obj["kind"] == "MutatingWebhookConfiguration" else kube.SECRETS
            cluster.emulator.objects[resource_key(res), obj["metadata"].get("namespace"), obj["metadata"]["name"]] = obj
    await start_operator(modules=HANDLER_MODULES, config=OperatorConfig.from_env(env), namespaces=watched)
    configuration = env["LLMCACHE_WEBHOOK_CONFIGURATION"]
    await cluster.wait_for(
        lambda: (cluster.obj(kube.MUTATING_WEBHOOK_CONFIGURATIONS, configuration) or {}).get("webhooks"),
        what="the operator to fill in the chart's webhook configuration",
    )
    await exercise(cluster, redis_server.url, str(tmp_path / "milvus.db"))

    authorizer = Authorizer(manifests(values), ACCOUNT, NAMESPACE)
    # The operator authenticates with the harness's kubeconfig token; the test's own writes
    # (creating caches, marking workloads ready) carry no credentials.
    assert any(r.headers.get("Authorization") for r in cluster.emulator)
    from_operator = [r for r in cluster.emulator if r.headers.get("Authorization") == f"Bearer {OPERATOR_TOKEN}"]
    requests = [request_from_http(str(r.method.value), str(r.url)) for r in from_operator]
    resource_requests = [r for r in requests if r is not None]
    refused = sorted({str(r) for r in resource_requests if not authorizer.allows(r)})
    assert not refused, "the chart's RBAC would refuse:\n" + "\n".join(refused)
    # The replay saw the whole life cycle, the webhook's set-up included.
    seen = {(r.verb, r.resource) for r in resource_requests}
    assert {("patch", "mutatingwebhookconfigurations"), ("create", "secrets"), ("create", "statefulsets"),
            ("delete", "deployments"), ("patch", "llmcaches/status"), ("watch", "llmcaches")} <= seen
    # The chart's shells are filled in, never created anew (so `helm uninstall` removes them).
    assert ("create", "mutatingwebhookconfigurations") not in seen
    webhook_secret_calls = {r.verb for r in resource_requests if r.resource == "secrets" and r.namespace == NAMESPACE}
    assert webhook_secret_calls == ({"get", "patch"} if value_set == "defaults" else set())  # cert-manager: mounted
