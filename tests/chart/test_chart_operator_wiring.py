"""The Deployment's flags and environment mean to the operator what the chart says they mean.

Read by the operator's own parsers (``llmcache_operator.__main__.parse_args``,
``OperatorConfig.from_env``, ``load_webhook_settings``, ``admission.register``), so a renamed flag
or variable fails here rather than in a cluster.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import helm_python
import kopf
import pytest
import yaml
from llmcache_operator import admission, certs
from llmcache_operator.__main__ import parse_args
from llmcache_operator.runtime import Runtime
from llmcache_operator.settings import OperatorConfig
from llmcache_operator.webhook_config import (
    ENV_PREFIX,
    WebhookSettings,
    load_webhook_settings,
    mutating_webhook_configuration,
)

from tests.chart.helmchart import (
    CHART_DIR,
    NAMESPACE,
    REPO,
    VALUE_SETS,
    container_env,
    find,
    manifests,
    one,
    operator_container,
)

OPERATOR_PACKAGE = REPO / "operator" / "llmcache_operator"
#: Components with an image and default resources under the chart's ``defaults``.
COMPONENTS = ("sidecar", "redis", "milvus", "vllm")


def test_chart_defaults_are_the_operators_defaults() -> None:
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["defaults"]
    operator = OperatorConfig()
    assert defaults["sidecar"]["image"] == operator.sidecar_image
    assert defaults["sidecar"]["gpuImage"] == operator.sidecar_gpu_image
    for component in COMPONENTS:
        assert defaults[component]["resources"] == getattr(operator, f"{component}_resources").as_dict(), component
    assert defaults["redis"]["image"] == operator.redis_image
    assert defaults["milvus"]["image"] == operator.milvus_image
    assert defaults["vllm"]["image"] == operator.vllm_image
    assert defaults["statsIntervalSeconds"] == operator.stats_interval_seconds
    assert defaults["rolloutDeadlineSeconds"] == operator.rollout_deadline_seconds
    assert defaults["rolloutPropagationSeconds"] == operator.rollout_propagation_seconds


#: Operator settings the chart leaves at the operator's default, and why.
NOT_IN_THE_CHART = {"rollout_check_seconds": "an internal polling interval, not a cluster choice"}


def test_the_chart_sets_every_operator_setting() -> None:
    """A new OperatorConfig field (env LLMCACHE_<FIELD>) needs a chart value, or a reason here."""
    env = container_env(operator_container(manifests()))
    for field in dataclasses.fields(OperatorConfig):
        if field.name not in NOT_IN_THE_CHART:
            assert "LLMCACHE_" + field.name.upper() in env, f"no chart value sets OperatorConfig.{field.name}"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_variable_the_chart_sets_is_one_the_operator_reads(value_set: str) -> None:
    sources = "".join(path.read_text() for path in OPERATOR_PACKAGE.glob("*.py"))
    webhook_fields = {ENV_PREFIX + field.upper() for field in WebhookSettings.model_fields}
    for name in container_env(operator_container(manifests(VALUE_SETS[value_set]))):
        if name.startswith(ENV_PREFIX):
            assert name in webhook_fields or name == admission.ENABLED_ENV, name
        elif name.startswith("LLMCACHE_"):
            assert f'"{name}"' in sources, f"the chart sets {name}, which the operator never reads"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_operator_parses_the_rendered_arguments(value_set: str) -> None:
    values = VALUE_SETS[value_set]
    container = operator_container(manifests(values))
    options = parse_args(container["args"])
    watched = values.get("operator", {}).get("watchNamespaces", [])
    assert options.namespaces == tuple(watched)
    assert options.clusterwide is (not watched)
    health = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    assert options.liveness == f"http://0.0.0.0:{health}/healthz"
    assert container["livenessProbe"]["httpGet"]["port"] == "health"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_operator_reads_the_images_the_chart_sets(value_set: str) -> None:
    values = VALUE_SETS[value_set]
    config = OperatorConfig.from_env(container_env(operator_container(manifests(values))))
    with helm_python.Chart.load(CHART_DIR) as chart:
        chart_defaults = chart.merge_values(values)["defaults"]
    assert config.sidecar_image == chart_defaults["sidecar"]["image"]
    assert config.sidecar_gpu_image == chart_defaults["sidecar"]["gpuImage"]
    for component in COMPONENTS:
        assert getattr(config, f"{component}_resources").as_dict() == chart_defaults[component]["resources"], component
    assert config.redis_image == chart_defaults["redis"]["image"]
    assert config.milvus_image == chart_defaults["milvus"]["image"]
    assert config.vllm_image == chart_defaults["vllm"]["image"]
    assert config.stats_interval_seconds == chart_defaults["statsIntervalSeconds"]
    assert config.rollout_deadline_seconds == chart_defaults["rolloutDeadlineSeconds"]
    assert config.rollout_propagation_seconds == chart_defaults["rolloutPropagationSeconds"]


def _webhook_settings_and_objects(values: dict[str, Any]) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    objects = manifests(values)
    container = operator_container(objects)
    return load_webhook_settings(container_env(container)), objects, container


@pytest.mark.parametrize("value_set", sorted(set(VALUE_SETS) - {"no-webhook"}))
def test_webhook_settings_match_the_rendered_service_and_certificate(value_set: str) -> None:
    values = VALUE_SETS[value_set]
    hook, objects, container = _webhook_settings_and_objects(values)
    service = one(objects, "Service")
    (port,) = service["spec"]["ports"]
    assert (hook.namespace, hook.service, hook.service_port) == (NAMESPACE, service["metadata"]["name"], port["port"])
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert hook.listen_address == ("0.0.0.0", container_ports[port["targetPort"]])
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert hook.failure_policy == values.get("webhook", {}).get("failurePolicy", "Ignore")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    if hook.cert_mode == "self-signed":
        assert hook.operator_manages_certificate
        assert volumes[mounts["/tmp"]].get("emptyDir") is not None  # the cert dir is writable
        assert hook.cert_dir.startswith("/tmp/")
    else:
        assert volumes[mounts[hook.cert_dir]]["secret"]["secretName"] == hook.cert_secret
    certificates = find(objects, "Certificate")
    if hook.cert_mode == "cert-manager":
        (certificate,) = certificates
        assert certificate["spec"]["secretName"] == hook.cert_secret
        assert hook.certificate == certificate["metadata"]["name"]
        assert certificate["spec"]["dnsNames"] == certs.service_dns_names(hook.service, hook.namespace)
        issuer = certificate["spec"]["issuerRef"]
        custom = values["webhook"].get("certManager", {}).get("issuerRef")
        assert issuer == (custom or {"name": one(objects, "Issuer")["metadata"]["name"], "kind": "Issuer", "group": "cert-manager.io"})
        if not custom:
            assert one(objects, "Issuer")["spec"] == {"selfSigned": {}}
    else:
        assert not certificates
    if hook.cert_mode == "provided":
        assert hook.cert_secret == values["webhook"]["tlsSecretName"]


def test_the_webhook_configuration_name_is_the_one_rbac_allows() -> None:
    hook, objects, _ = _webhook_settings_and_objects({})
    names = [rule.get("resourceNames") for role in find(objects, "ClusterRole") for rule in role["rules"] if "mutatingwebhookconfigurations" in rule["resources"]]
    assert [hook.configuration] in names


@pytest.mark.parametrize("value_set,handlers", [("defaults", ["llmcache-inject"]), ("no-webhook", [])])
def test_webhook_enabled_switches_the_injector(value_set: str, handlers: list[str]) -> None:
    env = container_env(operator_container(manifests(VALUE_SETS[value_set])))
    registry = kopf.OperatorRegistry()
    admission.register(registry, Runtime(config=OperatorConfig.from_env(env)), environ=env)
    assert [handler.id for handler in registry._webhooks.get_all_handlers()] == handlers
    if not handlers:
        objects = manifests(VALUE_SETS[value_set])
        assert not find(objects, "Service") and not find(objects, "Certificate")


@pytest.mark.parametrize("value_set", ["defaults", "cert-manager", "provided-certificate"])
def test_release_owned_webhook_objects_are_the_ones_the_operator_fills_in(value_set: str) -> None:
    """The chart creates the (empty) webhook configuration and TLS Secret so that uninstalling
    removes them; they must carry the names and the cert-manager annotation the operator uses."""
    hook, objects, _ = _webhook_settings_and_objects(VALUE_SETS[value_set])
    shell = one(objects, "MutatingWebhookConfiguration", hook.configuration)
    assert "webhooks" not in shell  # the operator owns them (and their caBundle)
    operator_view = mutating_webhook_configuration(hook, None)
    assert shell["metadata"].get("annotations") == operator_view["metadata"].get("annotations")
    secrets = find(objects, "Secret", hook.cert_secret)
    if hook.operator_manages_certificate:
        (secret,) = secrets
        assert secret["type"] == certs.tls_secret(hook.cert_secret, hook.namespace, {}, certs.generate(["x"]))["type"]
        assert secret["metadata"]["namespace"] == hook.namespace
    else:
        assert not secrets  # mounted from cert-manager's or the user's Secret


def test_no_webhook_configuration_when_the_operator_does_not_manage_it() -> None:
    objects = manifests({"webhook": {"manageConfiguration": False}})
    assert not find(objects, "MutatingWebhookConfiguration")
    env = container_env(operator_container(objects))
    assert load_webhook_settings(env).manage_configuration is False


def test_the_chart_can_set_every_webhook_setting() -> None:
    """Every LLMCACHE_WEBHOOK_* setting is set by some value set, but the out-of-cluster URL."""
    rendered = set()
    for values in VALUE_SETS.values():
        rendered |= set(container_env(operator_container(manifests(values))))
    missing = {field for field in WebhookSettings.model_fields if ENV_PREFIX + field.upper() not in rendered}
    assert missing == {"url"}  # for an operator outside the cluster; the chart runs it inside


def test_null_clears_a_default_resources_value() -> None:
    """Helm merges ``{}`` into the chart's map (the default stays); ``null`` removes it: no default."""
    env = container_env(operator_container(manifests({"defaults": {"sidecar": {"resources": None}}})))
    assert OperatorConfig.from_env(env).sidecar_resources.as_dict() == {}
