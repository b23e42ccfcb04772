"""The pure manifest builders: what they produce, and that Kubernetes' own schemas accept it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from llmcache_operator import names
from llmcache_operator.children import cache_context, desired_state
from llmcache_operator.context import CacheContext
from llmcache_operator.credentials import generated_secrets, secret_manifest
from llmcache_operator.milvus import milvus_service, milvus_statefulset
from llmcache_operator.redis import redis_service, redis_statefulset
from llmcache_operator.settings import DEFAULT_MILVUS_IMAGE, OperatorConfig
from llmcache_operator.sidecar_config import CONFIG_KEY, sidecar_configmap
from llmcache_operator.spec import SpecError
from llmcache_operator.vllm import vllm_deployment, vllm_service
from llmcache_sidecar.config import load_settings

K8S_VERSION = "1.29"
#: The oldest schemas the manifests must pass (1.29), and the newest kubernetes-validate ships.
K8S_VERSIONS = (K8S_VERSION, kubernetes_validate.utils.latest_version())
MODEL = {"name": "meta-llama/Llama-3.1-8B-Instruct", "revision": "2024-09-25"}

SPECS: dict[str, dict[str, Any]] = {
    "defaults": {"model": MODEL},
    "all-external": {
        "model": MODEL,
        "vllm": {"external": {"url": "http://vllm.example:8000"}},
        "redis": {"mode": "external", "url": "redis://redis.example:6379/1",
                  "passwordSecret": {"name": "redis-credentials", "key": "redis-password"}},
        "milvus": {"mode": "external", "uri": "http://milvus.example:19530"},
    },
    "many-gpus": {"model": MODEL, "vllm": {"gpus": 8, "replicas": 2,
                                          "resources": {"limits": {"memory": "64Gi"}, "requests": {"cpu": "8"}}}},
    "no-gpu-extra-args": {"model": {**MODEL, "servedModelName": "llama"},
                          "vllm": {"gpus": 0, "enablePrefixCaching": False,
                                   "extraArgs": ["--dtype=half", "--gpu-memory-utilization", "0.85"]}},
    "no-persistence": {"model": MODEL, "redis": {"persistence": False}, "milvus": {"persistence": False}},
    "tuned": {
        "model": {"name": "m", "revision": "V1.2_beta"},
        "redis": {"maxmemory": "2gb", "maxmemoryPolicy": "allkeys-lfu", "storage": "5Gi",
                  "resources": {"limits": {"memory": "3Gi"}}},
        "milvus": {"storage": "50Gi", "resources": {"requests": {"memory": "4Gi"}}},
        "vllm": {"modelCacheClaim": "weights", "hfTokenSecret": {"name": "hf"}},
        "embedding": {"device": "cpu"},
        "cache": {"semantic": {"threshold": 0.9, "ttlSeconds": 3600}, "exact": {"ttlSeconds": 600},
                  "maxTemperature": 0.5, "tenantHeader": "X-Tenant"},
        "sidecar": {"port": 8081, "metricsPort": 9091},
    },
}


def context(spec: dict[str, Any], name: str = "demo", namespace: str = "apps") -> CacheContext:
    return cache_context(name, namespace, spec, OperatorConfig())


def all_manifests(spec: dict[str, Any]) -> list[dict[str, Any]]:
    ctx = context(spec)
    revision = ctx.spec.model.revision
    state = desired_state(ctx, revision, frozenset({revision}))
    return state.manifests + [secret_manifest(ctx, wanted, "s3cret") for wanted in state.secrets]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("case", sorted(SPECS))
def test_every_manifest_passes_the_kubernetes_schema(case: str, version: str) -> None:
    manifests = all_manifests(SPECS[case])
    assert manifests
    for manifest in manifests:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_validator_refuses_what_kubernetes_would() -> None:
    broken = redis_service(context(SPECS["defaults"]))
    broken["spec"]["ports"][0]["port"] = "not-a-port"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("case", sorted(SPECS))
def test_every_child_carries_the_contract_labels(case: str) -> None:
    for manifest in all_manifests(SPECS[case]):
        labels = manifest["metadata"]["labels"]
        assert labels[names.MANAGED_BY_LABEL] == "llmcache-operator"
        assert labels[names.CACHE_LABEL] == "demo"
        assert labels[names.NAME_LABEL] == "llmcache"
        assert labels[names.COMPONENT_LABEL] in {"redis", "milvus", "vllm", "sidecar-config", "admin"}
        assert manifest["metadata"]["namespace"] == "apps"


def test_defaults_provision_every_component_under_the_contract_names() -> None:
    kinds = {(m["kind"], m["metadata"]["name"]) for m in all_manifests(SPECS["defaults"])}
    assert kinds == {
        ("ConfigMap", "demo-sidecar"),
        ("StatefulSet", "demo-redis"), ("Service", "demo-redis"), ("NetworkPolicy", "demo-redis"),
        ("StatefulSet", "demo-milvus"), ("Service", "demo-milvus"), ("NetworkPolicy", "demo-milvus"),
        ("Deployment", "demo-vllm-2024-09-25"), ("Service", "demo-vllm"),
        ("Secret", "demo-admin"), ("Secret", "demo-redis"),
    }


def test_external_modes_provision_nothing_but_the_sidecar_config_and_admin_token() -> None:
    kinds = {(m["kind"], m["metadata"]["name"]) for m in all_manifests(SPECS["all-external"])}
    assert kinds == {("ConfigMap", "demo-sidecar"), ("Secret", "demo-admin")}


def test_redis_statefulset() -> None:
    statefulset = redis_statefulset(context(SPECS["tuned"]))
    redis = container(statefulset)
    args = redis["args"]
    assert args[args.index("--maxmemory") + 1] == "2gb"
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lfu"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    password = {"secretKeyRef": {"name": "demo-redis", "key": "password"}}
    assert {"name": "REDIS_PASSWORD", "valueFrom": password} in redis["env"]
    assert redis["resources"] == {"limits": {"memory": "3Gi"}}
    assert redis["readinessProbe"]["exec"]["command"][-1].endswith('= "PONG" ]')
    assert redis["securityContext"]["runAsNonRoot"] and redis["securityContext"]["readOnlyRootFilesystem"]
    assert redis["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert args[args.index("--appendonly") + 1] == "yes"


def test_redis_without_persistence_uses_an_emptydir_and_no_append_only_file() -> None:
    statefulset = redis_statefulset(context(SPECS["no-persistence"]))
    assert "volumeClaimTemplates" not in statefulset["spec"]
    assert {"name": "data", "emptyDir": {}} in statefulset["spec"]["template"]["spec"]["volumes"]
    args = container(statefulset)["args"]
    assert args[args.index("--appendonly") + 1] == "no"


def test_milvus_standalone_with_embedded_etcd_and_local_storage() -> None:
    ctx = context(SPECS["tuned"])
    statefulset = milvus_statefulset(ctx)
    milvus = container(statefulset)
    env = {item["name"]: item["value"] for item in milvus["env"]}
    assert env["ETCD_USE_EMBED"] == "true" and env["COMMON_STORAGETYPE"] == "local"
    assert env["DEPLOY_MODE"] == "STANDALONE", "Milvus panics on embedded etcd without it"
    assert (env["MQ_TYPE"], env["WOODPECKER_STORAGE_TYPE"]) == ("woodpecker", "local"), "no MinIO, no Pulsar"
    assert milvus["image"] == DEFAULT_MILVUS_IMAGE
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert milvus["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 9091, "protocol": "TCP"} in milvus["ports"]
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    service = milvus_service(ctx)
    assert {port["port"] for port in service["spec"]["ports"]} == {19530, 9091}


def test_the_chart_pins_the_same_milvus_image_as_the_operator() -> None:
    """Two pins of one image (the operator's default, the chart's value): they must not drift apart,
    since the pod's uid 999 holds only for the Milvus 3.x images (docs/security.md)."""
    values = yaml.safe_load((Path(__file__).resolve().parents[2] / "charts/llmcache/values.yaml").read_text())
    assert values["defaults"]["milvus"]["image"] == DEFAULT_MILVUS_IMAGE
    assert OperatorConfig.from_env({}).milvus_image == DEFAULT_MILVUS_IMAGE


def test_vllm_deployment_args_gpus_and_volumes() -> None:
    ctx = context(SPECS["many-gpus"])
    deployment = vllm_deployment(ctx, "2024-09-25")
    vllm = container(deployment)
    args = vllm["args"]
    assert args[args.index("--model") + 1] == MODEL["name"]
    assert args[args.index("--served-model-name") + 1] == MODEL["name"]
    assert args[args.index("--max-model-len") + 1] == "8192"
    assert args[args.index("--tensor-parallel-size") + 1] == "8"
    assert "--enable-prefix-caching" in args
    assert vllm["resources"] == {"limits": {"memory": "64Gi", "nvidia.com/gpu": 8}, "requests": {"cpu": "8"}}
    assert deployment["spec"]["replicas"] == 2
    assert vllm["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
    mounts = {mount["mountPath"]: mount["name"] for mount in vllm["volumeMounts"]}
    assert mounts["/dev/shm"] == "dshm" and mounts["/var/lib/vllm/huggingface"] == "model-cache"
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {}}


def test_vllm_extra_args_served_name_and_no_gpu() -> None:
    vllm = container(vllm_deployment(context(SPECS["no-gpu-extra-args"]), "2024-09-25"))
    args = vllm["args"]
    assert args[args.index("--served-model-name") + 1] == "llama"
    assert "--enable-prefix-caching" not in args and "--tensor-parallel-size" not in args
    assert args[-3:] == ["--dtype=half", "--gpu-memory-utilization", "0.85"]
    assert "resources" not in vllm


def test_vllm_weights_claim_and_hf_token() -> None:
    deployment = vllm_deployment(context(SPECS["tuned"]), "V1.2_beta")
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "weights"}
    env = container(deployment)["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in env


def test_one_deployment_per_revision_and_a_service_selecting_the_active_one() -> None:
    ctx = context(SPECS["defaults"])
    old, new = vllm_deployment(ctx, "2024-09-25"), vllm_deployment(ctx, "v2.0/β")
    assert old["metadata"]["name"] != new["metadata"]["name"]
    slug = names.revslug("v2.0/β")
    assert new["metadata"]["name"] == f"demo-vllm-{slug}"
    assert new["spec"]["selector"]["matchLabels"][names.REVISION_LABEL] == slug
    assert new["spec"]["template"]["metadata"]["labels"][names.REVISION_LABEL] == slug
    assert new["metadata"]["annotations"][names.MODEL_REVISION_ANNOTATION] == "v2.0/β"
    service = vllm_service(ctx, "v2.0/β")
    assert service["metadata"]["name"] == "demo-vllm"
    assert service["spec"]["selector"] == {
        names.CACHE_LABEL: "demo", names.COMPONENT_LABEL: "vllm", names.REVISION_LABEL: slug,
    }
    assert service["spec"]["ports"][0]["port"] == 8000


@pytest.mark.parametrize("revision", ["2024-09-25", "v1.2", "V1 beta", "a" * 128, "--x--", "ü"])
def test_revslug_is_a_dns_label_and_distinct(revision: str) -> None:
    slug = names.revslug(revision)
    assert 0 < len(slug) <= 63
    assert slug[0].isalnum() and slug[-1].isalnum()
    assert all(ch.isdigit() or ch == "-" or "a" <= ch <= "z" for ch in slug)
    assert names.revslug(revision.upper() + "x") != slug


def test_the_sidecar_config_is_what_the_sidecar_loads(tmp_path: Any) -> None:
    ctx = context(SPECS["tuned"])
    configmap = sidecar_configmap(ctx, "v1.2-beta")
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"][CONFIG_KEY])
    settings = load_settings(environ={"LLMCACHE_CONFIG": str(path)})
    assert settings.upstream_url == "http://demo-vllm.apps.svc:8000"
    assert settings.redis_url == "redis://demo-redis.apps.svc:6379/0"
    assert settings.milvus_uri == "http://demo-milvus.apps.svc:19530"
    assert settings.cache_name == "demo" and settings.model_revision == "v1.2-beta"
    assert settings.similarity_threshold == 0.9
    assert settings.ttl_seconds == 600 and settings.effective_semantic_ttl == 3600
    assert settings.max_temperature == 0.5 and settings.tenant_header == "X-Tenant"
    assert settings.embedding_device == "cpu"
    assert settings.listen == "127.0.0.1:8081" and settings.metrics_listen == "0.0.0.0:9091"
    assert settings.redis_password is None and settings.admin_token is None


def test_the_sidecar_config_uses_external_urls() -> None:
    text = sidecar_configmap(context(SPECS["all-external"]), "r")["data"][CONFIG_KEY]
    data = yaml.safe_load(text)
    assert data["upstream_url"] == "http://vllm.example:8000"
    assert data["redis_url"] == "redis://redis.example:6379/1"
    assert data["milvus_uri"] == "http://milvus.example:19530"


def test_a_setting_the_sidecar_refuses_is_a_spec_error() -> None:
    # A revision the sidecar cannot key entries with (a rollout passes revisions in).
    with pytest.raises(SpecError, match="sidecar refuses this configuration: model_revision: must not contain"):
        sidecar_configmap(context(SPECS["defaults"]), "a:b")


def test_generated_secrets() -> None:
    ctx = context(SPECS["defaults"])
    wanted = {secret.name: secret.key for secret in generated_secrets(ctx)}
    assert wanted == {"demo-admin": "token", "demo-redis": "password"}
    admin = secret_manifest(ctx, generated_secrets(ctx)[0], "tok")
    assert base64.b64decode(admin["data"]["token"]).decode() == "tok"
    assert admin["metadata"]["labels"][names.COMPONENT_LABEL] == "admin"
    assert [s.name for s in generated_secrets(context(SPECS["all-external"]))] == ["demo-admin"]


def test_builders_are_pure() -> None:
    assert all_manifests(SPECS["tuned"]) == all_manifests(SPECS["tuned"])
