"""The webhook's settings (``LLMCACHE_WEBHOOK_*``) and the MutatingWebhookConfiguration they imply.

Selectors: ``objectSelector`` can only match labels, while the contract's opt-in is an
annotation.  Two webhooks cover it without sending every pod of the cluster through the
operator: one for pods labelled ``llmcache.dev/inject`` (anywhere), one for the other pods of
namespaces labelled ``llmcache.dev/injection: enabled`` (where the annotation alone suffices).
They are disjoint, so a pod is reviewed once.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from llmcache_sidecar.config import parse_host_port
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmcache_operator import names
from llmcache_operator.webhook import INJECT_KEY

ENV_PREFIX = "LLMCACHE_WEBHOOK_"
#: The kopf handler id; also the URL path the API server posts reviews to.
HANDLER_ID = "llmcache-inject"
NAMESPACE_LABEL = "llmcache.dev/injection"
NAMESPACE_LABEL_ENABLED = "enabled"
CA_INJECT_ANNOTATION = "cert-manager.io/inject-ca-from"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class WebhookSettings(BaseModel):
    """Field ``foo_bar`` is env ``LLMCACHE_WEBHOOK_FOO_BAR``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = Field("0.0.0.0:9443", description="address:port the HTTPS server listens on")
    namespace: str = Field("llmcache-system", description="the operator's namespace (Service, cert Secret)")
    service: str = Field("llmcache-webhook", description="Service in front of the operator's webhook port")
    service_port: int = Field(443, gt=0, lt=65536)
    url: str | None = Field(None, description="call this URL instead of the Service (operator outside the cluster)")
    configuration: str = Field("llmcache-sidecar-injector", description="name of the MutatingWebhookConfiguration")
    manage_configuration: bool = Field(True, description="create/update the MutatingWebhookConfiguration")
    cert_mode: Literal["self-signed", "cert-manager", "provided"] = Field(
        "self-signed", description="self-signed: the operator keeps a CA in cert_secret; else the certificate is mounted at cert_dir",
    )
    cert_secret: str = Field("llmcache-webhook-tls", description="Secret holding the CA and serving certificate")
    certificate: str | None = Field(None, description="cert-manager Certificate to inject the CA from; unset means cert_secret")
    cert_dir: str = Field("/tmp/llmcache-webhook", description="self-signed: where files are written; else where tls.crt, tls.key, ca.crt are mounted")
    extra_sans: tuple[str, ...] = Field((), description="more names/IPs for the self-signed certificate (comma-separated)")
    timeout_seconds: int = Field(5, ge=1, le=30)
    failure_policy: Literal["Ignore", "Fail"] = "Ignore"
    native_sidecar: Literal["auto", "true", "false"] = Field("auto", description="auto: native when the API server is >= 1.29")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @field_validator("extra_sans", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_host_port(self.listen)

    @property
    def operator_manages_certificate(self) -> bool:
        return self.cert_mode == "self-signed"


def load_webhook_settings(environ: Mapping[str, str]) -> WebhookSettings:
    """Settings from ``LLMCACHE_WEBHOOK_*``; the namespace defaults to the service account's."""
    values: dict[str, Any] = {}
    for field in WebhookSettings.model_fields:
        raw = environ.get(ENV_PREFIX + field.upper())
        if raw:
            values[field] = raw
    if "namespace" not in values and SERVICE_ACCOUNT_NAMESPACE.is_file():
        values["namespace"] = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    try:
        return WebhookSettings(**values)
    except ValidationError as exc:
        problems = [f"{ENV_PREFIX}{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors() if e["loc"]]
        raise ValueError("invalid webhook settings: " + "; ".join(problems)) from None


def webhook_labels() -> dict[str, str]:
    """Labels of the webhook's own objects (its configuration and TLS Secret)."""
    return {names.NAME_LABEL: "llmcache", names.MANAGED_BY_LABEL: names.MANAGED_BY, names.COMPONENT_LABEL: "webhook"}


def client_config(settings: WebhookSettings, ca_bundle: bytes | None) -> dict[str, Any]:
    """Where the API server sends reviews: the Service (or a URL), with the CA to verify it."""
    config: dict[str, Any]
    if settings.url:
        config = {"url": settings.url.rstrip("/") + "/" + HANDLER_ID}
    else:
        config = {"service": {"namespace": settings.namespace, "name": settings.service, "path": "/" + HANDLER_ID, "port": settings.service_port}}
    if ca_bundle:
        config["caBundle"] = base64.b64encode(ca_bundle).decode("ascii")
    return config


def _webhook(name: str, settings: WebhookSettings, ca_bundle: bytes | None, *, object_selector: dict[str, Any], namespace_selector: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": client_config(settings, ca_bundle),
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"], "scope": "Namespaced"}],
        "objectSelector": object_selector,
        "namespaceSelector": namespace_selector,
        "failurePolicy": settings.failure_policy,
        "matchPolicy": "Equivalent",
        # Events about missing caches are the only out-of-band writes, and none is made on dry runs.
        "sideEffects": "NoneOnDryRun",
        "timeoutSeconds": settings.timeout_seconds,
        # Later webhooks' containers are not app containers; a second pass would change nothing.
        "reinvocationPolicy": "Never",
    }


def mutating_webhook_configuration(settings: WebhookSettings, ca_bundle: bytes | None) -> dict[str, Any]:
    """The MutatingWebhookConfiguration of the injector (cluster-scoped, so no owner)."""
    metadata: dict[str, Any] = {"name": settings.configuration, "labels": webhook_labels()}
    if settings.cert_mode == "cert-manager":
        certificate = settings.certificate or settings.cert_secret
        metadata["annotations"] = {CA_INJECT_ANNOTATION: f"{settings.namespace}/{certificate}"}
    labelled = {"matchExpressions": [{"key": INJECT_KEY, "operator": "Exists"}]}
    unlabelled = {"matchExpressions": [{"key": INJECT_KEY, "operator": "DoesNotExist"}]}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata,
        "webhooks": [
            _webhook("pod-label.inject.llmcache.dev", settings, ca_bundle, object_selector=labelled, namespace_selector={}),
            _webhook(
                "pod-namespace.inject.llmcache.dev", settings, ca_bundle, object_selector=unlabelled,
                namespace_selector={"matchLabels": {NAMESPACE_LABEL: NAMESPACE_LABEL_ENABLED}},
            ),
        ],
    }
