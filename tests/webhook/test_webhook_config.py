"""The MutatingWebhookConfiguration and the LLMCACHE_WEBHOOK_* settings."""

from __future__ import annotations

import base64

import kubernetes_validate
import pytest
from llmcache_operator.webhook_config import (
    HANDLER_ID,
    WebhookSettings,
    load_webhook_settings,
    mutating_webhook_configuration,
)


def test_configuration_is_valid_and_only_selects_pods_that_ask() -> None:
    settings = WebhookSettings(namespace="ops")
    config = mutating_webhook_configuration(settings, b"PEM")
    kubernetes_validate.validate(config, "1.29", strict=True)
    labelled, namespaced = config["webhooks"]
    assert labelled["objectSelector"] == {"matchExpressions": [{"key": "llmcache.dev/inject", "operator": "Exists"}]}
    assert namespaced["namespaceSelector"] == {"matchLabels": {"llmcache.dev/injection": "enabled"}}
    assert namespaced["objectSelector"]["matchExpressions"][0]["operator"] == "DoesNotExist"
    for webhook in config["webhooks"]:
        assert webhook["failurePolicy"] == "Ignore"
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert webhook["timeoutSeconds"] == 5
        assert webhook["rules"][0]["operations"] == ["CREATE"] and webhook["rules"][0]["resources"] == ["pods"]
        assert webhook["clientConfig"]["service"] == {"namespace": "ops", "name": "llmcache-webhook", "path": "/" + HANDLER_ID, "port": 443}
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == b"PEM"
    assert "annotations" not in config["metadata"]


def test_cert_manager_mode_asks_cainjector_for_the_ca() -> None:
    settings = WebhookSettings(namespace="ops", cert_mode="cert-manager", cert_secret="hook-tls")
    config = mutating_webhook_configuration(settings, None)
    kubernetes_validate.validate(config, "1.29", strict=True)
    assert config["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "ops/hook-tls"}
    assert all("caBundle" not in webhook["clientConfig"] for webhook in config["webhooks"])


def test_url_mode_for_an_operator_outside_the_cluster() -> None:
    config = mutating_webhook_configuration(WebhookSettings(url="https://10.0.0.5:9443/"), b"PEM")
    kubernetes_validate.validate(config, "1.29", strict=True)
    assert config["webhooks"][0]["clientConfig"]["url"] == f"https://10.0.0.5:9443/{HANDLER_ID}"


def test_settings_from_the_environment() -> None:
    settings = load_webhook_settings({
        "LLMCACHE_WEBHOOK_LISTEN": "127.0.0.1:0",
        "LLMCACHE_WEBHOOK_NAMESPACE": "ops",
        "LLMCACHE_WEBHOOK_EXTRA_SANS": "127.0.0.1, hook.local",
        "LLMCACHE_WEBHOOK_TIMEOUT_SECONDS": "3",
        "LLMCACHE_WEBHOOK_NATIVE_SIDECAR": "false",
        "LLMCACHE_WEBHOOK_MANAGE_CONFIGURATION": "false",
    })
    assert settings.listen_address == ("127.0.0.1", 0)
    assert settings.extra_sans == ("127.0.0.1", "hook.local")
    assert settings.timeout_seconds == 3 and settings.native_sidecar == "false" and not settings.manage_configuration


@pytest.mark.parametrize(("key", "value"), [("TIMEOUT_SECONDS", "60"), ("LISTEN", "nope"), ("CERT_MODE", "vault"), ("FAILURE_POLICY", "Maybe")])
def test_bad_settings_name_the_variable(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"LLMCACHE_WEBHOOK_{key}"):
        load_webhook_settings({f"LLMCACHE_WEBHOOK_{key}": value, "LLMCACHE_WEBHOOK_NAMESPACE": "ops"})
