"""Real AdmissionReview v1 requests over HTTPS to the webhook the real operator serves."""

from __future__ import annotations

import base64
from pathlib import Path

import kubernetes_validate
from llmcache_operator import certs, kube
from llmcache_operator.__main__ import HANDLER_MODULES
from llmcache_operator.webhook import CONTAINER_NAME

from tests.operator.conftest import Cluster, resource_key
from tests.webhook.conftest import (
    CONFIGURATION,
    TLS_SECRET,
    WEBHOOK_NAMESPACE,
    Injector,
    StartInjector,
)
from tests.webhook.pods import CACHE_SPEC, app_pod, validate_pod

NAMESPACE = "apps"  # the harness's namespace for LLMCaches


async def cache_ready(cluster: Cluster, injector: Injector, name: str = "demo") -> None:
    """Create an LLMCache and wait until the webhook knows it."""
    await cluster.create_cache(name, CACHE_SPEC)
    await injector.wait_until_indexed(name, NAMESPACE)


def app_pod_in(namespace: str, **kwargs: object) -> dict:
    pod = app_pod(**kwargs)  # type: ignore[arg-type]
    pod["metadata"]["namespace"] = namespace
    return pod


async def test_annotated_pod_gets_a_classic_sidecar_before_1_29(cluster: Cluster, start_injector: StartInjector) -> None:
    injector = await start_injector()  # kmock reports Kubernetes 1.26
    await cache_ready(cluster, injector)
    pod = app_pod_in(NAMESPACE)
    response = await injector.review(pod, NAMESPACE)
    assert response["allowed"] is True and "warnings" not in response
    result = injector.patched(pod, response)
    validate_pod(result)
    assert [c["name"] for c in result["spec"]["containers"]] == ["app", "worker", CONTAINER_NAME]
    assert result["metadata"]["annotations"]["llmcache.dev/injected"] == "true"
    assert result["spec"]["containers"][1]["env"] == [{"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:8081/v1"}]


async def test_annotated_pod_gets_a_native_sidecar_from_1_29(cluster: Cluster, start_injector: StartInjector) -> None:
    injector = await start_injector(server_version="1.29")
    await cache_ready(cluster, injector)
    pod = app_pod_in(NAMESPACE, annotation=None, label="demo")  # the label alone opts in too
    result = injector.patched(pod, await injector.review(pod, NAMESPACE))
    validate_pod(result)
    sidecar = result["spec"]["initContainers"][0]
    assert sidecar["name"] == CONTAINER_NAME and sidecar["restartPolicy"] == "Always"
    assert [c["name"] for c in result["spec"]["containers"]] == ["app", "worker"]


async def test_pod_without_a_namespace_in_its_body_is_resolved_from_the_review(cluster: Cluster, start_injector: StartInjector) -> None:
    injector = await start_injector(NATIVE_SIDECAR="true")
    await cache_ready(cluster, injector)
    pod = app_pod()
    del pod["metadata"]["namespace"]
    result = injector.patched(pod, await injector.review(pod, NAMESPACE))
    assert result["spec"]["initContainers"][0]["name"] == CONTAINER_NAME


async def test_pod_that_does_not_ask_is_not_patched(cluster: Cluster, start_injector: StartInjector) -> None:
    injector = await start_injector()
    await cache_ready(cluster, injector)
    response = await injector.review(app_pod_in(NAMESPACE, annotation=None), NAMESPACE)
    assert response["allowed"] is True
    assert "patch" not in response and "warnings" not in response


async def test_injecting_twice_changes_nothing(cluster: Cluster, start_injector: StartInjector) -> None:
    injector = await start_injector(NATIVE_SIDECAR="true")
    await cache_ready(cluster, injector)
    pod = app_pod_in(NAMESPACE)
    once = injector.patched(pod, await injector.review(pod, NAMESPACE))
    again = await injector.review(once, NAMESPACE)
    assert again["allowed"] is True and "patch" not in again
    assert injector.patched(once, again) == once


async def test_missing_cache_is_admitted_unchanged_with_a_warning_and_an_event(cluster: Cluster, start_injector: StartInjector) -> None:
    injector = await start_injector()
    pod = app_pod_in(NAMESPACE, annotation="ghost")
    response = await injector.review(pod, NAMESPACE)
    assert response["allowed"] is True and "patch" not in response
    assert any(f"{NAMESPACE}/ghost does not exist" in warning for warning in response["warnings"])
    events = await cluster.wait_for(lambda: cluster.events(reason="LLMCacheNotFound"), what="a Warning Event")
    assert events[0]["type"] == "Warning" and events[0]["involvedObject"]["kind"] == "Pod"
    assert events[0]["involvedObject"]["name"] == "app-7d9f-"


async def test_dry_run_warns_without_an_event(cluster: Cluster, start_injector: StartInjector) -> None:
    injector = await start_injector()
    response = await injector.review(app_pod_in(NAMESPACE, annotation="ghost"), NAMESPACE, dry_run=True)
    assert response["allowed"] is True and response["warnings"]
    await cluster.settle(quiet_seconds=1.0)
    assert cluster.events(reason="LLMCacheNotFound") == []


async def test_the_written_configuration_is_valid_and_trusts_the_stored_ca(cluster: Cluster, start_injector: StartInjector) -> None:
    injector = await start_injector()
    configuration = injector.configuration()
    kubernetes_validate.validate(configuration, "1.29", strict=True)
    for webhook in configuration["webhooks"]:
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == injector.ca_pem
        assert webhook["failurePolicy"] == "Ignore" and webhook["sideEffects"] == "NoneOnDryRun"


async def test_a_stored_ca_is_reused_across_restarts(cluster: Cluster, start_injector: StartInjector) -> None:
    names = certs.service_dns_names("llmcache-webhook", WEBHOOK_NAMESPACE) + ["127.0.0.1"]
    earlier = certs.generate(names)
    secret = certs.tls_secret(TLS_SECRET, WEBHOOK_NAMESPACE, {}, earlier)
    cluster.emulator.objects["v1/secrets", WEBHOOK_NAMESPACE, TLS_SECRET] = secret
    injector = await start_injector()
    assert injector.ca_pem == earlier.ca_cert
    assert cluster.calls("patch", kube.SECRETS) == [] and cluster.calls("create", kube.SECRETS) == []
    await cache_ready(cluster, injector)
    pod = app_pod_in(NAMESPACE)
    assert "patch" in await injector.review(pod, NAMESPACE)  # the server presents a cert of the old CA


async def test_an_empty_secret_from_the_chart_is_filled(cluster: Cluster, start_injector: StartInjector) -> None:
    empty = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
             "metadata": {"name": TLS_SECRET, "namespace": WEBHOOK_NAMESPACE}, "data": {"tls.crt": "", "tls.key": ""}}
    cluster.emulator.objects["v1/secrets", WEBHOOK_NAMESPACE, TLS_SECRET] = empty
    injector = await start_injector()
    assert injector.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert [request.name for request in cluster.calls("patch", kube.SECRETS)] == [TLS_SECRET]
    response = await injector.review(app_pod_in(NAMESPACE, annotation=None), NAMESPACE)  # TLS verified against it
    assert response["allowed"] is True


async def test_the_whole_operator_serves_the_webhook(cluster: Cluster, start_injector: StartInjector) -> None:
    injector = await start_injector(server_version="1.30", modules=HANDLER_MODULES)  # what llmcache-operator runs
    await cache_ready(cluster, injector)
    pod = app_pod_in(NAMESPACE)
    result = injector.patched(pod, await injector.review(pod, NAMESPACE))
    validate_pod(result)
    assert result["spec"]["initContainers"][0]["name"] == CONTAINER_NAME


async def test_cert_manager_mode_serves_the_mounted_certificate(cluster: Cluster, start_injector: StartInjector, tmp_path: Path) -> None:
    mounted = tmp_path / "mounted-tls"
    mounted.mkdir()
    issued = certs.generate(certs.service_dns_names("llmcache-webhook", WEBHOOK_NAMESPACE) + ["127.0.0.1"])
    for key, value in {"tls.crt": issued.cert, "tls.key": issued.key, "ca.crt": issued.ca_cert}.items():
        (mounted / key).write_bytes(value)
    injector = await start_injector(CERT_MODE="cert-manager", CERT_DIR=str(mounted), CERTIFICATE="llmcache-webhook")
    configuration = injector.configuration()
    kubernetes_validate.validate(configuration, "1.29", strict=True)
    assert configuration["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": f"{WEBHOOK_NAMESPACE}/llmcache-webhook"}
    assert base64.b64decode(configuration["webhooks"][0]["clientConfig"]["caBundle"]) == issued.ca_cert
    assert [call for call in cluster.calls() if call.resource is not None and call.resource.plural == "secrets"] == []
    response = await injector.review(app_pod_in(NAMESPACE, annotation=None), NAMESPACE)  # TLS verified against ca.crt
    assert response["allowed"] is True


async def test_without_a_mounted_ca_the_injected_ca_bundle_is_kept(cluster: Cluster, start_injector: StartInjector, tmp_path: Path) -> None:
    mounted = tmp_path / "mounted-tls"
    mounted.mkdir()
    issued = certs.generate(["127.0.0.1"])
    (mounted / "tls.crt").write_bytes(issued.cert)
    (mounted / "tls.key").write_bytes(issued.key)
    injected = base64.b64encode(issued.ca_cert).decode()  # what cert-manager's CA injector put there
    cluster.serve(kube.MUTATING_WEBHOOK_CONFIGURATIONS, namespaced=False)
    cluster.emulator.objects[resource_key(kube.MUTATING_WEBHOOK_CONFIGURATIONS), None, CONFIGURATION] = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION}, "webhooks": [{"name": "old.llmcache.dev", "clientConfig": {"caBundle": injected}}],
    }
    injector = await start_injector(CERT_MODE="cert-manager", CERT_DIR=str(mounted))
    assert {webhook["clientConfig"]["caBundle"] for webhook in injector.configuration()["webhooks"]} == {injected}


async def test_a_cache_the_index_has_not_seen_yet_is_read_from_the_api(cluster: Cluster, start_injector: StartInjector) -> None:
    injector = await start_injector(NATIVE_SIDECAR="true")
    # Stored without a watch event (as if created while the operator was still listing).
    cluster.emulator.objects[resource_key(kube.LLMCACHES), NAMESPACE, "fresh"] = {
        "apiVersion": "llmcache.dev/v1alpha1", "kind": "LLMCache",
        "metadata": {"name": "fresh", "namespace": NAMESPACE}, "spec": CACHE_SPEC,
    }
    pod = app_pod_in(NAMESPACE, annotation="fresh")
    result = injector.patched(pod, await injector.review(pod, NAMESPACE))
    assert result["spec"]["initContainers"][0]["name"] == CONTAINER_NAME
    assert [request.name for request in cluster.calls("get", kube.LLMCACHES)] == ["fresh"]


async def test_the_charts_configuration_keeps_its_ownership_annotations(cluster: Cluster, start_injector: StartInjector) -> None:
    helm = {"meta.helm.sh/release-name": "llmcache", "meta.helm.sh/release-namespace": WEBHOOK_NAMESPACE}
    cluster.serve(kube.MUTATING_WEBHOOK_CONFIGURATIONS, namespaced=False)
    cluster.emulator.objects[resource_key(kube.MUTATING_WEBHOOK_CONFIGURATIONS), None, CONFIGURATION] = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION, "labels": {"app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {**helm, "cert-manager.io/inject-ca-from": "old/cert"}},
    }
    injector = await start_injector()
    configuration = injector.configuration()
    assert configuration["metadata"]["annotations"] == helm  # the stale cert-manager request is gone
    kubernetes_validate.validate(configuration, "1.29", strict=True)

