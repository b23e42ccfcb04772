"""The chart's RBAC grants exactly the API calls the operator makes (operator/llmcache_operator/kube.py)."""

from __future__ import annotations

import pytest

from llmcache_operator import kube
from tests.chart.helmchart import NAMESPACE, RELEASE, VALUE_SETS, iter_rules, manifests, one
from tests.chart.rbac import ApiRequest, Authorizer, request_from_http

ACCOUNT = f"{RELEASE}-llmcache-operator"
TLS_SECRET = f"{RELEASE}-llmcache-webhook-tls"
CLUSTER_SCOPED = {"customresourcedefinitions", "mutatingwebhookconfigurations", "namespaces"}
#: kopf scans namespaces only when it serves a list of them (kopf._core.reactor.observation).
NAMESPACE_SCAN_CALLS = {("list", "", "namespaces"), ("watch", "", "namespaces")}
#: Calls kube.py lists for the webhook's own TLS Secret (in the release namespace, by name).
TLS_SECRET_CALLS = {("patch", "", "secrets")}


def webhook_configuration_name(objects: list[dict]) -> str:
    env = {e["name"]: e.get("value") for e in one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    return env["LLMCACHE_WEBHOOK_CONFIGURATION"]


def where_made(call: kube.Call, objects: list[dict], app_namespace: str) -> ApiRequest:
    """The request the operator sends for ``call``: cluster-scoped objects by their name, the
    TLS Secret in the release namespace, everything else in a namespace holding LLMCaches."""
    verb, group, resource = call
    named = verb in ("get", "patch", "update", "delete")
    if resource in CLUSTER_SCOPED:
        return ApiRequest(verb, group, resource, None, webhook_configuration_name(objects) if named else None)
    if call in TLS_SECRET_CALLS:
        return ApiRequest(verb, group, resource, NAMESPACE, TLS_SECRET)
    return ApiRequest(verb, group, resource, app_namespace, "chat-redis" if named else None)


@pytest.mark.parametrize("value_set", ["defaults", "namespace-scoped", "custom-images-resources", "fail-closed"])
def test_every_call_of_the_operator_is_allowed(value_set: str) -> None:
    values = VALUE_SETS[value_set]
    objects = manifests(values)
    authorizer = Authorizer(objects, ACCOUNT, NAMESPACE)
    watched = values.get("operator", {}).get("watchNamespaces")
    calls = kube.API_CALLS if watched else kube.API_CALLS - NAMESPACE_SCAN_CALLS
    for namespace in watched or ["default", "team-x"]:
        for call in sorted(calls):
            request = where_made(call, objects, namespace)
            assert authorizer.allows(request), f"the chart's RBAC refuses {request}"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rbac_grants_nothing_the_operator_does_not_call(value_set: str) -> None:
    objects = manifests(VALUE_SETS[value_set])
    for role, rule in iter_rules(objects):
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], (role["metadata"]["name"], rule)
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert (verb, group, resource) in kube.API_CALLS, f"{role['metadata']['name']} grants {verb} {group}/{resource}, which the operator never calls"


def test_namespace_scoped_install_grants_namespaced_work_only_in_the_watched_namespaces() -> None:
    objects = manifests(VALUE_SETS["namespace-scoped"])
    authorizer = Authorizer(objects, ACCOUNT, NAMESPACE)
    assert authorizer.allows(ApiRequest("create", "apps", "statefulsets", "team-a"))
    assert not authorizer.allows(ApiRequest("create", "apps", "statefulsets", "team-c"))
    assert not authorizer.allows(ApiRequest("watch", "llmcache.dev", "llmcaches", None))
    # Cluster-scoped needs stay cluster-wide.
    assert authorizer.allows(ApiRequest("watch", "apiextensions.k8s.io", "customresourcedefinitions"))
    assert authorizer.allows(ApiRequest("watch", "", "namespaces"))
    # A cluster-wide operator has no reason to follow namespaces.
    assert not Authorizer(manifests(), ACCOUNT, NAMESPACE).allows(ApiRequest("list", "", "namespaces"))


def test_secrets_beyond_the_webhook_tls_secret_are_never_patched() -> None:
    objects = manifests()
    authorizer = Authorizer(objects, ACCOUNT, NAMESPACE)
    assert authorizer.allows(ApiRequest("patch", "", "secrets", NAMESPACE, TLS_SECRET))
    assert not authorizer.allows(ApiRequest("patch", "", "secrets", NAMESPACE, "someone-elses"))
    assert not authorizer.allows(ApiRequest("patch", "", "secrets", "default", "chat-redis"))
    assert not authorizer.allows(ApiRequest("list", "", "secrets", "default"))
    name = webhook_configuration_name(objects)
    assert authorizer.allows(ApiRequest("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", None, name))
    assert not authorizer.allows(ApiRequest("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", None, "istio-sidecar-injector"))


def test_without_rbac_creation_the_chart_renders_no_rbac() -> None:
    objects = manifests({"rbac": {"create": False}})
    assert not [o for o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io")]


def test_http_requests_map_to_authorizer_requests() -> None:
    assert request_from_http("GET", "/apis/llmcache.dev/v1alpha1/llmcaches?watch=true&resourceVersion=1") == ApiRequest("watch", "llmcache.dev", "llmcaches")
    assert request_from_http("PATCH", "/apis/llmcache.dev/v1alpha1/namespaces/ns/llmcaches/c/status") == ApiRequest("patch", "llmcache.dev", "llmcaches/status", "ns", "c")
    assert request_from_http("POST", "/api/v1/namespaces/ns/events") == ApiRequest("create", "", "events", "ns")
    assert request_from_http("GET", "/api/v1/namespaces/ns") == ApiRequest("get", "", "namespaces", None, "ns")
    assert request_from_http("GET", "/apis/apps/v1") is None
    assert request_from_http("GET", "/version") is None
