"""The operator's security promises, on the manifests it builds and the pods the webhook injects:
secrets only in Secrets, a password on managed Redis, NetworkPolicies around managed Redis and
Milvus, and locked-down containers: every one non-root with a read-only root filesystem, no
exception."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml
from llmcache_operator import names
from llmcache_operator.milvus import DATA_PATH as MILVUS_DATA
from llmcache_operator.milvus import MILVUS_UID
from llmcache_operator.milvus import SCRATCH_PATH as MILVUS_SCRATCH
from llmcache_operator.networkpolicy import BACKEND_PORTS, OPERATOR_POD_LABELS
from llmcache_operator.redis import redis_args
from llmcache_operator.sidecar_config import CONFIG_KEY
from llmcache_operator.vllm import SCRATCH_ENV
from llmcache_operator.vllm import SCRATCH_PATH as VLLM_SCRATCH
from llmcache_operator.vllm import WEIGHTS_PATH as VLLM_WEIGHTS
from llmcache_operator.webhook import InjectionOptions, injected_pod

from tests.chart import helmchart
from tests.operator.test_builders import K8S_VERSIONS, SPECS, all_manifests, context

SECRET_VALUE = "s3cret"  # what all_manifests puts into the generated Secrets
#: What each container may write to (volumes); everything else is the read-only root filesystem.
WRITABLE = {
    "redis": {"/data"},
    "milvus": {MILVUS_DATA, MILVUS_SCRATCH},
    "vllm": {VLLM_SCRATCH, VLLM_WEIGHTS, "/dev/shm"},
    "llmcache-sidecar": {"/tmp"},
    "operator": {"/tmp"},
}
APP_POD: dict[str, Any] = {"metadata": {"name": "app", "namespace": "apps", "annotations": {"llmcache.dev/inject": "demo"}},
                           "spec": {"containers": [{"name": "app", "image": "app:1"}]}}


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def pod_specs(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["spec"]["template"]["spec"] for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]


def injected(spec: dict[str, Any], native: bool = False) -> dict[str, Any]:
    return injected_pod(APP_POD, context(spec), InjectionOptions(native_sidecar=native))


@pytest.mark.parametrize("case", sorted(SPECS))
def test_secrets_live_only_in_secrets(case: str) -> None:
    manifests = all_manifests(SPECS[case])
    for manifest in manifests:
        if manifest["kind"] != "Secret":
            assert SECRET_VALUE not in yaml.safe_dump(manifest), (manifest["kind"], manifest["metadata"]["name"])
    config = yaml.safe_load(by_kind(manifests, "ConfigMap")["demo-sidecar"]["data"][CONFIG_KEY])
    assert not {"redis_password", "admin_token"} & config.keys()
    env = {item["name"]: item for item in injected(SPECS[case])["spec"]["containers"][-1]["env"]}
    admin = env["LLMCACHE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert (admin["name"], admin["key"]) == ("demo-admin", "token")
    password = context(SPECS[case]).redis_password_secret  # managed: demo-redis; external: spec's Secret
    if password is None:
        assert "LLMCACHE_REDIS_PASSWORD" not in env
    else:
        ref = env["LLMCACHE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == password
    assert all("value" not in item or SECRET_VALUE not in item["value"] for item in env.values())


def test_managed_redis_requires_the_generated_password() -> None:
    ctx = context(SPECS["defaults"])
    args = redis_args(ctx)
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    manifests = all_manifests(SPECS["defaults"])
    redis = by_kind(manifests, "StatefulSet")["demo-redis"]["spec"]["template"]["spec"]["containers"][0]
    password = {e["name"]: e for e in redis["env"]}["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "demo-redis", "key": "password"}
    assert by_kind(manifests, "Secret")["demo-redis"]["data"]["password"]
    sidecar = {e["name"]: e for e in injected(SPECS["defaults"])["spec"]["containers"][-1]["env"]}
    ref = sidecar["LLMCACHE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (password["name"], password["key"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_network_policies_admit_only_the_caches_sidecars_and_the_operator(version: str) -> None:
    manifests = all_manifests(SPECS["defaults"])
    policies = by_kind(manifests, "NetworkPolicy")
    assert set(policies) == {"demo-redis", "demo-milvus"}
    for component in ("redis", "milvus"):
        policy = policies[f"demo-{component}"]
        kubernetes_validate.validate(policy, version, strict=True)
        spec = policy["spec"]
        workload = by_kind(manifests, "StatefulSet")[f"demo-{component}"]
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert spec["policyTypes"] == ["Ingress"]
        (rule,) = spec["ingress"]
        assert {p["port"] for p in rule["ports"]} == set(BACKEND_PORTS[component])
        container_ports = {p["containerPort"] for p in workload["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert set(BACKEND_PORTS[component]) == container_ports
        sidecars, operator = rule["from"]
        assert sidecars == {"podSelector": {"matchLabels": {names.CLIENT_LABEL: "demo"}}}, "same namespace only"
        assert operator["podSelector"]["matchLabels"] == OPERATOR_POD_LABELS
    assert not by_kind(all_manifests(SPECS["all-external"]), "NetworkPolicy"), "nothing to guard when external"


@pytest.mark.parametrize("native", [False, True])
def test_injected_pods_carry_the_label_the_policies_admit(native: bool) -> None:
    pod = injected(SPECS["defaults"], native)
    assert pod["metadata"]["labels"][names.CLIENT_LABEL] == "demo"
    assert injected_pod(pod, context(SPECS["defaults"]), InjectionOptions(native_sidecar=native)) == pod


def test_the_chart_labels_the_operator_pod_as_the_policies_expect() -> None:
    objects = helmchart.manifests()
    deployment = helmchart.one(objects, "Deployment")
    assert OPERATOR_POD_LABELS.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec.get("containers") or []) + list(pod_spec.get("initContainers") or [])


def assert_locked_down(pod_spec: dict[str, Any], container: dict[str, Any]) -> None:
    """No privilege, no capability, default seccomp, a non-root uid, a read-only root filesystem,
    and writes only to its volumes."""
    pod_context = pod_spec.get("securityContext") or {}
    context = {**pod_context, **container["securityContext"]}
    name = container["name"]
    assert context["allowPrivilegeEscalation"] is False, name
    assert context["capabilities"] == {"drop": ["ALL"]}, name
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
    assert context["runAsNonRoot"] is True and context["readOnlyRootFilesystem"] is True, name
    assert context.get("runAsUser", 0) > 0 and context.get("runAsGroup", 0) > 0, name
    mounts = container.get("volumeMounts", [])
    writable = {m["mountPath"] for m in mounts if not m.get("readOnly")}
    assert writable == WRITABLE[name], (name, writable)
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    templates = {claim["metadata"]["name"] for claim in pod_spec.get("_claims", [])}
    for mount in mounts:
        assert mount["name"] in volumes or mount["name"] in templates, (name, mount)
        volume = volumes.get(mount["name"], {})
        assert not {"hostPath", "secret"} & volume.keys() or mount.get("readOnly"), (name, mount)
    if writable - {"/tmp", "/dev/shm"}:
        # a PersistentVolumeClaim or an emptyDir another uid wrote before: fsGroup makes it ours
        assert pod_context.get("fsGroup", 0) > 0, name


def _pods(case: str) -> list[dict[str, Any]]:
    """The pod specs of every workload built for ``case`` (claim templates attached as ``_claims``),
    and of an app pod the webhook injected, both sidecar forms."""
    pods = []
    for manifest in all_manifests(SPECS[case]):
        if manifest["kind"] in ("Deployment", "StatefulSet"):
            claims = manifest["spec"].get("volumeClaimTemplates", [])
            pods.append({**manifest["spec"]["template"]["spec"], "_claims": claims})
    return pods + [injected(SPECS[case], native)["spec"] for native in (False, True)]


@pytest.mark.parametrize("case", sorted(SPECS))
def test_every_container_we_create_is_locked_down(case: str) -> None:
    for pod_spec in _pods(case):
        injected_app = any(c["name"] == "app" for c in pod_spec["containers"])
        assert pod_spec.get("automountServiceAccountToken") is False or injected_app
        for container in _containers(pod_spec):
            if container["name"] != "app":
                assert_locked_down(pod_spec, container)


@pytest.mark.parametrize("values_file", ["default", "production-values.yaml", "team-namespaces-values.yaml"])
def test_the_charts_pods_are_locked_down(values_file: str) -> None:
    values = None if values_file == "default" else yaml.safe_load((helmchart.CHART_DIR / "ci" / values_file).read_text())
    workloads = [o for o in helmchart.manifests(values) if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]
    assert workloads
    for workload in workloads:
        pod_spec = workload["spec"]["template"]["spec"]
        for container in _containers(pod_spec):
            assert_locked_down(pod_spec, container)


def test_vllm_writes_every_cache_into_its_volumes() -> None:
    """The image runs as root by default; as uid 1000 with a read-only root, HOME and every cache
    its libraries use must point into a mounted volume (docs/security.md lists the sources)."""
    (deployment,) = [m for m in all_manifests(SPECS["defaults"]) if m["kind"] == "Deployment"]
    (vllm,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in vllm["env"]}
    assert env["USER"], "torch's getpass.getuser() needs it for a uid without a passwd entry"
    assert env["HF_HOME"] == VLLM_WEIGHTS
    pod_context = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_context["fsGroupChangePolicy"] == "OnRootMismatch", "no recursive chown of the weights at every start"
    for name in (*SCRATCH_ENV.keys() - {"USER", "VLLM_NO_USAGE_STATS"}, "HF_HOME"):
        assert any(env[name] == path or env[name].startswith(path + "/") for path in WRITABLE["vllm"]), name
    assert {"HOME", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "VLLM_CACHE_ROOT"} <= env.keys()


@pytest.mark.parametrize("persistence", [True, False])
def test_milvus_runs_as_the_images_own_user_with_only_its_data_and_tmp_writable(persistence: bool) -> None:
    """Milvus 3.x images run as ``milvus`` (uid/gid 999) and own /milvus as that user: the pod must
    use that uid (another non-root uid cannot run them), and its data volume must be writable by it."""
    spec = {**SPECS["defaults"], "milvus": {"persistence": persistence}}
    statefulset = by_kind(all_manifests(spec), "StatefulSet")["demo-milvus"]
    pod_spec = statefulset["spec"]["template"]["spec"]
    assert pod_spec["securityContext"] == {"runAsUser": MILVUS_UID, "runAsGroup": MILVUS_UID, "fsGroup": MILVUS_UID,
                                           "fsGroupChangePolicy": "OnRootMismatch"}
    assert MILVUS_UID == 999
    (milvus,) = pod_spec["containers"]
    assert "initContainers" not in pod_spec, "Milvus only reads /milvus/configs: nothing to copy"
    mounts = {m["mountPath"]: m["name"] for m in milvus["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    assert volumes[mounts[MILVUS_SCRATCH]] == {"name": mounts[MILVUS_SCRATCH], "emptyDir": {}}
    claims = {c["metadata"]["name"] for c in statefulset["spec"].get("volumeClaimTemplates", [])}
    assert (mounts[MILVUS_DATA] in claims) is persistence
    assert (mounts[MILVUS_DATA] in volumes) is not persistence
    env = {item["name"]: item["value"] for item in milvus["env"]}
    for path_setting in ("ETCD_DATA_DIR", "LOCALSTORAGE_PATH", "WOODPECKER_STORAGE_ROOTPATH"):
        assert env[path_setting].startswith(MILVUS_DATA + "/"), path_setting
