"""The kopf side of sidecar injection: the mutating handler, its TLS server and its configuration.

- ``llmcache_specs``: an index of every LLMCache's spec, so a review needs no API call (one
  GET only for a cache the index does not know, e.g. in the first moments after a restart).
- ``inject_sidecar``: the ``@kopf.on.mutate`` handler for pod creations (see :mod:`webhook`).
- :class:`InjectorServer`: kopf's HTTPS webhook server which, once the operator is logged in,
  decides the sidecar form (the API server's version), prepares the certificate (a self-signed
  CA kept in a Secret, or mounted files from cert-manager) and writes the
  MutatingWebhookConfiguration with the right ``caBundle``, again whenever the certificate
  files change.  kopf's own configuration management stays off: it cannot point at a Service,
  shorten the timeout or select on labels the way :mod:`webhook_config` does.

Settings: ``LLMCACHE_WEBHOOK_*`` (:class:`webhook_config.WebhookSettings`, docs/injection.md);
``LLMCACHE_WEBHOOK_ENABLED=false`` registers nothing (an operator without injection).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import functools
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
import kopf

from . import certs, names
from .kube import (
    EVENTS,
    LLMCACHES,
    MUTATING_WEBHOOK_CONFIGURATIONS,
    SECRETS,
    KubeApi,
    KubeError,
    NotLoggedIn,
)
from .runtime import Runtime
from .settings import SettingsError
from .webhook import InjectionOptions, requested_cache, review_pod, warning_event
from .webhook_config import (
    CA_INJECT_ANNOTATION,
    HANDLER_ID,
    WebhookSettings,
    load_webhook_settings,
    mutating_webhook_configuration,
    webhook_labels,
)

logger = logging.getLogger(__name__)

ENABLED_ENV = "LLMCACHE_WEBHOOK_ENABLED"
INDEX_ID = "llmcache_specs"
#: Native sidecars (init containers with ``restartPolicy: Always``) are on by default from 1.29.
NATIVE_SIDECAR_VERSION = (1, 29)
RETRY_SECONDS = 10.0
RENEW_CHECK_SECONDS = 24 * 3600.0
#: Each API call a review may make (a cache missing from the index, an Event): the review must
#: answer well within the webhook's ``timeoutSeconds``.
API_TIMEOUT_SECONDS = 1.0

T = TypeVar("T")


@dataclass(frozen=True)
class TLSFiles:
    """Where kopf's server reads its certificate; ``cafile`` is what the API server must trust."""

    certfile: Path
    keyfile: Path
    cafile: Path | None


def _leading_number(value: Any) -> int | None:
    match = re.match(r"\d+", str(value))
    return int(match.group()) if match else None


def supports_native_sidecars(version: Mapping[str, Any]) -> bool:
    """True for an API server ``/version`` of 1.29 or later (``"29+"``-style minors included)."""
    major, minor = _leading_number(version.get("major", "")), _leading_number(version.get("minor", ""))
    return major is not None and minor is not None and (major, minor) >= NATIVE_SIDECAR_VERSION


async def detect_native_sidecars(api: KubeApi, setting: str) -> bool:
    if setting != "auto":
        return setting == "true"
    return supports_native_sidecars(await api.server_version())


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)


async def ensure_tls_secret(api: KubeApi, hook: WebhookSettings) -> certs.TLSBundle:
    """The CA and serving certificate from ``hook.cert_secret``: created, reused or re-issued in place."""
    dns_names = certs.service_dns_names(hook.service, hook.namespace) + list(hook.extra_sans)
    secret = await api.get(SECRETS, hook.namespace, hook.cert_secret)
    existing = certs.TLSBundle.from_secret_data(certs.decode_secret_data(secret)) if secret else None
    bundle = certs.ensure(existing, dns_names)
    manifest = certs.tls_secret(hook.cert_secret, hook.namespace, webhook_labels(), bundle)
    if secret is None:
        try:
            await api.create(SECRETS, hook.namespace, manifest)
        except KubeError as exc:
            if exc.status != 409:
                raise
            return await ensure_tls_secret(api, hook)  # another replica was first: use its CA
    elif bundle != existing:
        # Only the data: a Secret's type is immutable (the chart pre-creates it, empty, as kubernetes.io/tls).
        await api.patch(SECRETS, hook.namespace, hook.cert_secret, {"data": manifest["data"]})
    return bundle


async def prepare_tls(api: KubeApi, hook: WebhookSettings) -> TLSFiles:
    """The certificate files for the server: written from the Secret, or as mounted (cert-manager)."""
    cert_dir = Path(hook.cert_dir)
    certfile, keyfile, cafile = cert_dir / certs.CERT_KEY, cert_dir / certs.KEY_KEY, cert_dir / certs.CA_CERT_KEY
    if hook.operator_manages_certificate:
        bundle = await ensure_tls_secret(api, hook)
        cert_dir.mkdir(parents=True, exist_ok=True)
        _write(certfile, bundle.cert, 0o644)
        _write(keyfile, bundle.key, 0o600)
        _write(cafile, bundle.ca_cert, 0o644)
        return TLSFiles(certfile, keyfile, cafile)
    for required in (certfile, keyfile):
        if not required.is_file():
            raise FileNotFoundError(f"{required} is missing: mount the certificate Secret at LLMCACHE_WEBHOOK_CERT_DIR={cert_dir}")
    return TLSFiles(certfile, keyfile, cafile if cafile.is_file() else None)


def _current_ca_bundle(current: Mapping[str, Any] | None) -> str | None:
    for webhook in (current or {}).get("webhooks") or []:
        bundle = (webhook.get("clientConfig") or {}).get("caBundle")
        if bundle:
            return str(bundle)
    return None


async def publish_configuration(api: KubeApi, hook: WebhookSettings, ca: bytes | None) -> None:
    """Create or update the MutatingWebhookConfiguration.

    Without a CA file (cert-manager with an issuer that gives no ``ca.crt``) the ``caBundle``
    already there, put by cert-manager's CA injector, is kept.
    """
    desired = mutating_webhook_configuration(hook, ca)
    current = await api.get(MUTATING_WEBHOOK_CONFIGURATIONS, None, hook.configuration)
    kept = None if ca else _current_ca_bundle(current)
    if kept:
        for webhook in desired["webhooks"]:
            webhook["clientConfig"]["caBundle"] = kept
    if current is None:
        try:
            await api.create(MUTATING_WEBHOOK_CONFIGURATIONS, None, desired)
            return
        except KubeError as exc:
            if exc.status != 409:
                raise
    # Merge into the metadata (Helm's ownership annotations stay); drop a stale CA-injection request.
    metadata = {
        "labels": desired["metadata"]["labels"],
        "annotations": desired["metadata"].get("annotations") or {CA_INJECT_ANNOTATION: None},
    }
    await api.patch(MUTATING_WEBHOOK_CONFIGURATIONS, None, hook.configuration, {"metadata": metadata, "webhooks": desired["webhooks"]})


async def until_done(step: Callable[[], Awaitable[T]], what: str) -> T:
    """Retry ``step`` until it succeeds: the webhook's trouble must never stop the operator."""
    while True:
        try:
            return await step()
        except (TimeoutError, KubeError, NotLoggedIn, aiohttp.ClientError, OSError) as exc:
            logger.error(f"Cannot {what} (retrying in {RETRY_SECONDS:.0f}s): {exc}")
        await asyncio.sleep(RETRY_SECONDS)


async def renew_periodically(api: KubeApi, hook: WebhookSettings) -> None:
    """Re-check the self-signed certificate daily, so an operator that never restarts renews it too.

    :func:`prepare_tls` rewrites the same bytes while the certificate fits, which kopf ignores.
    """
    while True:
        await asyncio.sleep(RENEW_CHECK_SECONDS)
        await until_done(functools.partial(prepare_tls, api, hook), "renew the webhook certificate")


def _with_request_namespace(fn: kopf.WebhookFn) -> kopf.WebhookFn:
    """Fill the object's namespace from the review when the API server left it out."""

    async def serve(request: dict[str, Any], **kwargs: Any) -> Any:
        payload = request.get("request") or {}
        obj = payload.get("object")
        if isinstance(obj, dict) and payload.get("namespace") and not (obj.get("metadata") or {}).get("namespace"):
            obj.setdefault("metadata", {})["namespace"] = payload["namespace"]
        return await fn(request, **kwargs)  # type: ignore[arg-type]

    return cast(kopf.WebhookFn, serve)


class InjectorServer(kopf.WebhookServer):
    """kopf's HTTPS server, set up (certificate, sidecar form, configuration) once logged in."""

    def __init__(self, injector: Injector) -> None:
        host, port = injector.hook.listen_address
        super().__init__(addr=host, port=port or None)
        self.injector = injector

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        hook, api = self.injector.hook, self.injector.api
        native = await until_done(functools.partial(detect_native_sidecars, api, hook.native_sidecar), "read the API server version")
        self.injector.options = InjectionOptions(native_sidecar=native)
        files = await until_done(functools.partial(prepare_tls, api, hook), "prepare the webhook certificate")
        self.certfile, self.pkeyfile, self.cafile = files.certfile, files.keyfile, files.cafile
        logger.info(f"Serving the llmcache injector on {hook.listen} ({'native' if native else 'classic'} sidecars).")
        # kopf restarts the server (and this loop publishes again) whenever the files change:
        # when cert-manager renews them, or when the renewer below re-issues the serving cert.
        renewer = asyncio.create_task(renew_periodically(api, hook)) if hook.operator_manages_certificate else None
        try:
            async for client_config in super().__call__(_with_request_namespace(fn)):
                if hook.manage_configuration:
                    ca = files.cafile.read_bytes() if files.cafile is not None else None
                    await until_done(functools.partial(publish_configuration, api, hook, ca), "write the MutatingWebhookConfiguration")
                yield client_config
        finally:
            if renewer is not None:
                renewer.cancel()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _first(values: Iterable[T] | None) -> T | None:
    return next(iter(values or ()), None)


def _replace(new_body: Mapping[str, Any], body: dict[str, Any]) -> None:
    body.clear()
    body.update(copy.deepcopy(dict(new_body)))


def llmcache_specs(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """The raw spec, whatever JSON it is (``review_pod`` reports one that is not an object as invalid;
    kopf's ``spec`` view cannot even be copied then)."""
    return {(namespace or "", name): copy.deepcopy(body.get("spec", {}))}


class Injector:
    """The handlers' shared state: settings, the API client, and the sidecar form once known."""

    def __init__(self, hook: WebhookSettings, runtime: Runtime) -> None:
        self.hook = hook
        self.runtime = runtime
        self.options = InjectionOptions(native_sidecar=hook.native_sidecar == "true")

    @property
    def api(self) -> KubeApi:
        return self.runtime.api

    async def configure(self, settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.admission.managed = None
        settings.admission.server = InjectorServer(self)

    async def inject_sidecar(
        self, body: kopf.Body, namespace: str | None, patch: kopf.Patch, warnings: list[str], dryrun: bool,
        llmcache_specs: kopf.Index[tuple[str, str], Any], **_: Any,
    ) -> None:
        namespace = namespace or ""
        try:
            specs = {cache: _first(llmcache_specs.get((namespace, cache))) for cache in filter(None, [requested_cache(body)])}
            for cache in [cache for cache, spec in specs.items() if spec is None]:
                specs[cache] = await self.fetch_spec(namespace, cache)
            review = review_pod(body, namespace, specs.get, self.runtime.config, self.options)
        except Exception:  # a bug in the injector must never refuse a pod: admit it unchanged
            logger.exception("The llmcache injector failed; admitting the pod unchanged.")
            warnings.append("llmcache: the injector failed; the pod runs without the cache sidecar")
            return
        if review.pod is not None:
            patch.fns.append(functools.partial(_replace, review.pod))
        if review.warning is not None:
            logger.warning(review.warning)
            warnings.append(review.warning)
            if not dryrun:
                await self.post_event(warning_event(body, namespace, review, f"llmcache-inject.{uuid.uuid4().hex}", _now()))

    async def fetch_spec(self, namespace: str, cache: str) -> Any:
        """Ask the API server for a cache the index does not know (yet: right after a restart)."""
        try:
            found = await asyncio.wait_for(self.api.get(LLMCACHES, namespace, cache), API_TIMEOUT_SECONDS)
        except (TimeoutError, KubeError, NotLoggedIn, aiohttp.ClientError, OSError) as exc:
            logger.warning(f"Cannot read LLMCache {namespace}/{cache}: {exc}")
            return None
        if found is None:
            return None
        spec = found.get("spec")
        return {} if spec is None else spec

    async def post_event(self, event: Mapping[str, Any]) -> None:
        """Post ``event`` quickly or not at all."""
        try:
            await asyncio.wait_for(self.api.create(EVENTS, event["metadata"]["namespace"], event), API_TIMEOUT_SECONDS)
        except (TimeoutError, KubeError, NotLoggedIn, aiohttp.ClientError, OSError) as exc:
            logger.warning(f"Cannot post the Event {event['reason']}: {exc}")


def register(registry: kopf.OperatorRegistry, runtime: Runtime, environ: Mapping[str, str] | None = None) -> None:
    """Add the injection handlers (see ``__main__.HANDLER_MODULES``)."""
    environ = os.environ if environ is None else environ
    if environ.get(ENABLED_ENV, "true").lower() in ("false", "0", "no"):
        return
    try:
        hook = load_webhook_settings(environ)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    injector = Injector(hook, runtime)
    kopf.index(names.GROUP, names.VERSION, names.PLURAL, id=INDEX_ID, registry=registry)(llmcache_specs)
    kopf.on.startup(id="llmcache-webhook-server", registry=registry)(injector.configure)
    kopf.on.mutate(
        "", "v1", "pods", id=HANDLER_ID, operations=["CREATE"], ignore_failures=True, registry=registry,
    )(injector.inject_sidecar)
