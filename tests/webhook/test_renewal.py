"""The self-signed certificate over time: what the operator does at start and every day after."""

from __future__ import annotations

import datetime
from pathlib import Path

import kopf
from cryptography import x509
from llmcache_operator import certs, kube
from llmcache_operator.admission import prepare_tls
from llmcache_operator.kube import KubeApi
from llmcache_operator.webhook_config import WebhookSettings

from tests.operator.conftest import Cluster
from tests.webhook.conftest import TLS_SECRET, WEBHOOK_NAMESPACE


async def logged_in(cluster: Cluster) -> KubeApi:
    api = KubeApi()
    await api.login(kopf.ConnectionInfo(server=str(cluster.emulator.url), token="test-token"))
    return api


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


async def test_fitting_files_are_rewritten_byte_for_byte(cluster: Cluster, tmp_path: Path) -> None:
    hook = WebhookSettings(namespace=WEBHOOK_NAMESPACE, cert_secret=TLS_SECRET, cert_dir=str(tmp_path))
    api = await logged_in(cluster)
    try:
        await prepare_tls(api, hook)
        first = files_of(tmp_path)
        await prepare_tls(api, hook)  # the daily check: nothing to renew, so kopf sees no change
        assert files_of(tmp_path) == first
        assert len(cluster.calls("create", kube.SECRETS)) == 1
        assert cluster.calls("patch", kube.SECRETS) == []
    finally:
        await api.close()


async def test_an_expiring_serving_certificate_is_renewed_under_the_same_ca(cluster: Cluster, tmp_path: Path) -> None:
    hook = WebhookSettings(namespace=WEBHOOK_NAMESPACE, cert_secret=TLS_SECRET, cert_dir=str(tmp_path))
    issued_long_ago = datetime.datetime.now(datetime.UTC) - certs.CERT_LIFETIME + datetime.timedelta(days=5)
    old = certs.generate(certs.service_dns_names(hook.service, hook.namespace), issued_long_ago)
    cluster.emulator.objects["v1/secrets", WEBHOOK_NAMESPACE, TLS_SECRET] = certs.tls_secret(TLS_SECRET, WEBHOOK_NAMESPACE, {}, old)
    api = await logged_in(cluster)
    try:
        files = await prepare_tls(api, hook)
    finally:
        await api.close()
    assert files.cafile is not None and files.cafile.read_bytes() == old.ca_cert  # caBundle unchanged
    renewed = x509.load_pem_x509_certificate(files.certfile.read_bytes())
    assert renewed.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)
    renewed.verify_directly_issued_by(x509.load_pem_x509_certificate(old.ca_cert))
    assert [request.name for request in cluster.calls("patch", kube.SECRETS)] == [TLS_SECRET]
