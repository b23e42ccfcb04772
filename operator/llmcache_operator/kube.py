"""Every Kubernetes API call the operator makes, in one place.

Credentials come from kopf's login (:func:`login`), so this client and kopf's own always talk to
the same cluster as the same user.  :data:`OPERATOR_CALLS` lists the (verb, group, resource)
triples this module may use, :data:`KOPF_CALLS` the ones kopf makes for the handlers; the client
refuses any call missing from its table, so :func:`rbac_rules` (which the chart turns into the
ClusterRole) is always complete.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from . import names


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        """``namespace=None`` for cluster-scoped resources."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{root}/{self.plural}" if namespace is None else f"{root}/namespaces/{quote(namespace)}/{self.plural}"
        if name is not None:
            path += f"/{quote(name)}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


LLMCACHES = Resource(names.GROUP, names.VERSION, names.PLURAL, names.KIND)
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
STATEFULSETS = Resource("apps", "v1", "statefulsets", "StatefulSet")
SERVICES = Resource("", "v1", "services", "Service")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
NETWORK_POLICIES = Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")
EVENTS = Resource("", "v1", "events", "Event")
MUTATING_WEBHOOK_CONFIGURATIONS = Resource(
    "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration",
)
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace")

#: Manifests the operator applies, by ``kind``.
BY_KIND = {res.kind: res for res in (DEPLOYMENTS, STATEFULSETS, SERVICES, CONFIGMAPS, SECRETS, NETWORK_POLICIES)}

USER_AGENT = "llmcache-operator"

Call = tuple[str, str, str]  # (verb, group, resource or resource/subresource)

#: What this module calls (children are read before they are written; the operator never patches
#: the Secrets it generates, only the webhook re-issues its TLS Secret).
OPERATOR_CALLS: frozenset[Call] = frozenset({
    ("get", names.GROUP, "llmcaches"),
    ("patch", names.GROUP, "llmcaches/status"),
    *((verb, "apps", "deployments") for verb in ("get", "list", "create", "patch", "delete")),
    *((verb, "apps", "statefulsets") for verb in ("get", "create", "patch")),
    *((verb, "", "services") for verb in ("get", "create", "patch")),
    *((verb, "", "configmaps") for verb in ("get", "create", "patch")),
    *((verb, "networking.k8s.io", "networkpolicies") for verb in ("get", "create", "patch")),
    *((verb, "", "secrets") for verb in ("get", "create")),
    # The injection webhook (admission.py): its TLS Secret (re-issued in place), its configuration,
    # and the Event about a pod naming a missing LLMCache (kopf's poster does not serve webhooks).
    ("patch", "", "secrets"),
    ("create", "", "events"),
    *((verb, "admissionregistration.k8s.io", "mutatingwebhookconfigurations") for verb in ("get", "create", "patch")),
})

#: What kopf calls for the registered handlers: watching the LLMCaches (and the children whose
#: events refresh the status), its finalizer and progress annotations, status, Events, the
#: CRD scan that notices the CRD being installed or upgraded, and (with ``--namespace``) the
#: namespace scan that matches the namespace patterns.
KOPF_CALLS: frozenset[Call] = frozenset({
    *((verb, names.GROUP, "llmcaches") for verb in ("list", "watch", "patch")),
    ("patch", names.GROUP, "llmcaches/status"),
    *((verb, "apps", "deployments") for verb in ("list", "watch")),
    *((verb, "apps", "statefulsets") for verb in ("list", "watch")),
    ("create", "", "events"),
    *((verb, "apiextensions.k8s.io", "customresourcedefinitions") for verb in ("list", "watch")),
    *((verb, "", "namespaces") for verb in ("list", "watch")),
})

API_CALLS: frozenset[Call] = OPERATOR_CALLS | KOPF_CALLS


def rbac_rules(calls: Iterable[Call] = API_CALLS) -> list[dict[str, list[str]]]:
    """ClusterRole rules granting exactly ``calls``: one rule per (group, resource)."""
    grouped: dict[tuple[str, str], set[str]] = {}
    for verb, group, resource in calls:
        grouped.setdefault((group, resource), set()).add(verb)
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
        for (group, resource), verbs in sorted(grouped.items())
    ]


class KubeError(Exception):
    """A refused API call; ``status`` is the HTTP status, the message the API server's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class NotLoggedIn(RuntimeError):
    """An API call before kopf's login handler gave this client its credentials."""


class KubeApi:
    """A small async client for the calls in :data:`OPERATOR_CALLS`, over one aiohttp session."""

    def __init__(self, allowed: frozenset[Call] = OPERATOR_CALLS) -> None:
        self._allowed = allowed
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None

    async def login(self, info: kopf.ConnectionInfo) -> None:
        """Use these credentials from now on (kopf calls login again when a token expires)."""
        await self.close()
        self._info = info

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> tuple[aiohttp.ClientSession, kopf.ConnectionInfo]:
        if self._info is None:
            raise NotLoggedIn("the Kubernetes API client has no credentials yet")
        if self._session is None:
            info = self._info
            ssl_context: ssl.SSLContext | bool = False if info.insecure else info.as_ssl_context()
            self._session = aiohttp.ClientSession(
                base_url=info.server.rstrip("/") + "/",
                headers={**info.as_http_headers(), "User-Agent": USER_AGENT},
                connector=aiohttp.TCPConnector(ssl=ssl_context if info.server.startswith("https") else False),
                timeout=aiohttp.ClientTimeout(total=30),
                trust_env=info.trust_env,
            )
        return self._session, self._info

    async def _request(
        self, verb: str, res: Resource, method: str, path: str, *,
        subresource: str | None = None, json_body: Any = None, params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        call = (verb, res.group, f"{res.plural}/{subresource}" if subresource else res.plural)
        if call not in self._allowed:
            raise PermissionError(f"{call} is not in kube.OPERATOR_CALLS: add it there (the RBAC follows)")
        session, _ = self._client()
        data = None if json_body is None else json.dumps(json_body)
        async with session.request(
            method, path.lstrip("/"), data=data, params=params, headers={"Content-Type": content_type},
        ) as response:
            if response.status == 404 and verb in ("get", "delete"):
                return None
            text = await response.text()
            if response.status >= 400:
                try:
                    message = json.loads(text).get("message", text)
                except (ValueError, AttributeError):
                    message = text
                raise KubeError(response.status, message)
            return json.loads(text) if text else {}

    async def server_version(self) -> dict[str, Any]:
        """The API server's ``/version`` (readable by every authenticated user: no RBAC rule)."""
        session, _ = self._client()
        async with session.get("version") as response:
            if response.status >= 400:
                raise KubeError(response.status, await response.text())
            return await response.json()

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        return await self._request("get", res, "GET", res.path(namespace, name))

    async def list(self, res: Resource, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        result = await self._request("list", res, "GET", res.path(namespace), params={"labelSelector": selector})
        items = (result or {}).get("items", [])
        # Filter here too: a selector is a request, and a stricter answer costs nothing.
        return [item for item in items if _has_labels(item, labels)]

    async def create(self, res: Resource, namespace: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request("create", res, "POST", res.path(namespace), json_body=body) or {}

    async def patch(
        self, res: Resource, namespace: str | None, name: str, patch: Mapping[str, Any], subresource: str | None = None,
    ) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386): dicts merge, lists and scalars replace, None deletes."""
        return await self._request(
            "patch", res, "PATCH", res.path(namespace, name, subresource), subresource=subresource,
            json_body=patch, content_type="application/merge-patch+json",
        ) or {}

    async def delete(self, res: Resource, namespace: str, name: str) -> None:
        await self._request(
            "delete", res, "DELETE", res.path(namespace, name), json_body={"propagationPolicy": "Background"},
        )


def _has_labels(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    present = obj.get("metadata", {}).get("labels") or {}
    return all(present.get(key) == value for key, value in labels.items())
