"""A small RBAC authorizer over rendered manifests: what would the API server allow the operator?

It follows Kubernetes' RBAC rules: a ClusterRoleBinding grants its ClusterRole everywhere (and on
cluster-scoped objects), a RoleBinding grants its Role or ClusterRole in its own namespace only;
a rule matches when its apiGroups, resources (``resource/subresource``) and verbs match, and its
resourceNames, when present, name the object (so they never match create, list or watch).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class ApiRequest:
    """One resource request as the API server's authorizer sees it."""

    verb: str
    group: str
    resource: str  # "plural" or "plural/subresource"
    namespace: str | None = None  # None: cluster-scoped, or across all namespaces
    name: str | None = None


def _rule_allows(rule: Mapping[str, Any], request: ApiRequest) -> bool:
    if request.group not in rule.get("apiGroups", []) and "*" not in rule.get("apiGroups", []):
        return False
    if request.resource not in rule.get("resources", []) and "*" not in rule.get("resources", []):
        return False
    if request.verb not in rule.get("verbs", []) and "*" not in rule.get("verbs", []):
        return False
    names = rule.get("resourceNames") or []
    return not names or (request.name is not None and request.name in names)


class Authorizer:
    """The permissions of one ServiceAccount under a set of rendered RBAC objects."""

    def __init__(self, objects: Iterable[Mapping[str, Any]], account: str, account_namespace: str) -> None:
        objects = list(objects)
        self._roles = {("Role", o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects if o["kind"] == "Role"}
        self._cluster_roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRole"}
        subject = {"kind": "ServiceAccount", "name": account, "namespace": account_namespace}
        #: (namespace or None for cluster-wide, rules)
        self.grants: list[tuple[str | None, list[Mapping[str, Any]]]] = []
        for binding in objects:
            if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
                continue
            if not any(all(s.get(k) == v for k, v in subject.items()) for s in binding.get("subjects", [])):
                continue
            ref = binding["roleRef"]
            namespace = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
            if ref["kind"] == "ClusterRole":
                role = self._cluster_roles.get(ref["name"])
            else:
                role = self._roles.get(("Role", namespace, ref["name"]))
            if role is not None:
                self.grants.append((namespace, list(role.get("rules") or [])))

    def allows(self, request: ApiRequest) -> bool:
        for namespace, rules in self.grants:
            if namespace is not None and namespace != request.namespace:
                continue
            if any(_rule_allows(rule, request) for rule in rules):
                return True
        return False


_VERBS_BY_METHOD = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def request_from_http(method: str, url: str) -> ApiRequest | None:
    """The authorizer's view of an HTTP call to the API server; None for non-resource paths
    (discovery, /version), which every authenticated user may read."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if segments[:2] == ["api", "v1"]:
        group, rest = "", segments[2:]
    elif segments[:1] == ["apis"] and len(segments) >= 3:
        group, rest = segments[1], segments[3:]
    else:
        return None
    if not rest:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
    resource = f"{plural}/{sub}" if sub else plural
    method = method.upper()
    if method == "GET":
        watching = parse_qs(parts.query).get("watch", ["false"])[0] in ("true", "1")
        verb = "get" if name else ("watch" if watching else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _VERBS_BY_METHOD.get(method, method.lower())
    return ApiRequest(verb, group, resource, namespace, name)
