"""The real operator with its injection webhook: kopf on kmock, real HTTPS, the operator's own CA.

``injector``: starts the operator (C's harness, ``tests/operator/conftest.py``) with the
webhook listening on a free loopback port, waits until it has written its
MutatingWebhookConfiguration, and gives an :class:`Injector` to send AdmissionReviews with a
client that trusts only the CA the operator stored in its Secret.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import pytest
from llmcache_operator import kube
from llmcache_operator.webhook_config import HANDLER_ID

from tests.conftest import free_port
from tests.operator import conftest as operator_harness
from tests.operator.conftest import WAIT_SECONDS, Cluster

# C's harness fixtures (kopf on kmock), made visible to the tests in this folder.
emulator = operator_harness.emulator
cluster = operator_harness.cluster
start_operator = operator_harness.start_operator

WEBHOOK_NAMESPACE = "llmcache-system"
TLS_SECRET = "llmcache-webhook-tls"
CONFIGURATION = "llmcache-sidecar-injector"
PODS = kube.Resource("", "v1", "pods", "Pod")
#: Login and the webhook, no reconciling: the webhook must work whatever the reconciler does.
WEBHOOK_ONLY = ("tests.webhook.login", "llmcache_operator.admission")


class Injector:
    """Sends AdmissionReview v1 requests to the running webhook, as the API server would."""

    def __init__(self, cluster: Cluster, url: str, ca_pem: bytes) -> None:
        self.cluster = cluster
        self.url = url
        self.ca_pem = ca_pem

    def configuration(self) -> dict[str, Any] | None:
        """The MutatingWebhookConfiguration as stored (cluster-scoped: no namespace)."""
        return self.cluster.obj(kube.MUTATING_WEBHOOK_CONFIGURATIONS, CONFIGURATION)

    def written(self) -> bool:
        """Whether the operator has written its webhooks into the configuration."""
        webhooks = (self.configuration() or {}).get("webhooks") or []
        return any(webhook.get("name") == "pod-label.inject.llmcache.dev" for webhook in webhooks)

    async def review(self, pod: dict[str, Any], namespace: str, *, dry_run: bool = False) -> dict[str, Any]:
        """The ``response`` part of the webhook's AdmissionReview answer."""
        request = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "oldObject": None,
                "dryRun": dry_run,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            },
        }
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        async with aiohttp.ClientSession() as session, session.post(self.url, json=request, ssl=context) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == request["request"]["uid"]
        return answer["response"]

    async def wait_until_indexed(self, cache: str, namespace: str) -> None:
        """Until the operator's index knows ``cache`` (dry-run reviews: no Events)."""
        probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "probe-", "namespace": namespace,
                 "annotations": {"llmcache.dev/inject": cache}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}

        async def known() -> bool:
            return "warnings" not in await self.review(probe, namespace, dry_run=True)

        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while not await known():
            assert asyncio.get_running_loop().time() < deadline, f"the webhook never saw LLMCache {namespace}/{cache}"
            await asyncio.sleep(0.1)

    @staticmethod
    def patched(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
        """``pod`` with the response's JSONPatch applied (unchanged when there is none)."""
        if "patch" not in response:
            return pod
        assert response["patchType"] == "JSONPatch"
        ops = jsonpatch.JsonPatch.from_string(base64.b64decode(response["patch"]).decode())
        return ops.apply(pod)


StartInjector = Callable[..., Awaitable[Injector]]


@pytest.fixture()
async def start_injector(
    cluster: Cluster, start_operator: Callable[..., Awaitable[None]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[StartInjector]:
    """``await start_injector(server_version=..., modules=..., **env)``: the operator with the webhook, ready.

    ``env`` sets ``LLMCACHE_WEBHOOK_<KEY>``; ``server_version`` ("1.29") is what ``/version`` says.
    """

    async def start(server_version: str | None = None, modules: Sequence[str] = WEBHOOK_ONLY, **env: str) -> Injector:
        port = free_port()
        settings = {
            "LISTEN": f"127.0.0.1:{port}",
            "URL": f"https://127.0.0.1:{port}",
            "NAMESPACE": WEBHOOK_NAMESPACE,
            "CERT_DIR": str(tmp_path / "webhook-certs"),
            "EXTRA_SANS": "127.0.0.1",
            **env,
        }
        for key, value in settings.items():
            monkeypatch.setenv(f"LLMCACHE_WEBHOOK_{key}", value)
        cluster.serve(PODS)
        cluster.serve(kube.MUTATING_WEBHOOK_CONFIGURATIONS, namespaced=False)
        if server_version is not None:
            major, minor = server_version.split(".")
            cluster.emulator["get /version"] << {"major": major, "minor": minor, "gitVersion": f"v{server_version}.0"}
        await start_operator(modules=modules)
        injector = Injector(cluster, f"https://127.0.0.1:{port}/{HANDLER_ID}", b"")
        await cluster.wait_for(injector.written, what="the operator's MutatingWebhookConfiguration")
        if settings.get("CERT_MODE", "self-signed") == "self-signed":
            secret = cluster.obj(kube.SECRETS, TLS_SECRET, WEBHOOK_NAMESPACE)
            assert secret is not None, "the operator stored no CA"
            injector.ca_pem = base64.b64decode(secret["data"]["ca.crt"])
        elif (Path(settings["CERT_DIR"]) / "ca.crt").is_file():  # mounted, as cert-manager writes it
            injector.ca_pem = (Path(settings["CERT_DIR"]) / "ca.crt").read_bytes()
        return injector

    yield start
