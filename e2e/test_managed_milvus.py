"""The managed Milvus on a real cluster: it becomes Ready running as the image's own user
(uid/gid 999) with a read-only root filesystem, writing only to its claim and ``/tmp``.

This is where the manifests' promise (tests/reliability/test_security_manifests.py checks it on
the schemas) meets the real image: a path Milvus writes that is not a volume, or a uid the image
cannot run as, keeps the pod from ever becoming Ready.
"""

from __future__ import annotations

from llmcache_operator import names
from llmcache_operator.milvus import DATA_PATH, MILVUS_UID, SCRATCH_PATH

from e2e.cluster import Kubectl, wait_until
from e2e.conftest import Images, Namespaces, Release
from e2e.workloads import CACHE_NAME, llmcache, upstream_objects

#: The Milvus image (a few GB) pulled on a fresh node, then Milvus' first start.
MILVUS_READY = 1500
#: Runs in the Milvus container (shell builtins and touch only): the uid/gid of its main process
#: (PID 1, tini, which starts Milvus as the same user), whether the root filesystem and the
#: volumes take a write, and what Milvus put on its data volume.
PROBE = f"""
while read -r key real _; do
  case "$key" in Uid:) echo "uid $real";; Gid:) echo "gid $real";; esac
done < /proc/1/status
for dir in /milvus /usr {DATA_PATH} {SCRATCH_PATH}; do
  if touch "$dir/.llmcache-probe" 2>/dev/null; then rm -f "$dir/.llmcache-probe"; echo "writable $dir"
  else echo "read-only $dir"; fi
done
for entry in {DATA_PATH}/*; do echo "data ${{entry##*/}}"; done
"""


def milvus_condition(kubectl: Kubectl, namespace: str) -> dict:
    status = kubectl.json("get", "llmcache", CACHE_NAME, "-n", namespace).get("status") or {}
    (condition,) = [c for c in status.get("conditions", []) if c["type"] == "MilvusReady"]
    return condition


def test_managed_milvus_is_ready_as_uid_999_with_a_read_only_root(
    kubectl: Kubectl, images: Images, namespaces: Namespaces, release: Release,
) -> None:
    apps = namespaces.apps
    kubectl.apply(*upstream_objects(apps, images.sidecar))
    kubectl.apply(llmcache(apps, "r1", managed_milvus=True, milvus_storage="2Gi"))
    pod = f"{names.milvus_name(CACHE_NAME)}-0"
    wait_until(lambda: kubectl.exists("pod", pod, apps), timeout=300, what=f"pod {pod}")
    kubectl("wait", "--for=condition=Ready", f"pod/{pod}", "-n", apps, f"--timeout={MILVUS_READY}s", timeout=MILVUS_READY + 60)

    spec = kubectl.json("get", "pod", pod, "-n", apps)["spec"]
    (container,) = spec["containers"]
    context = {**spec["securityContext"], **container["securityContext"]}
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (MILVUS_UID,) * 3
    assert context["runAsNonRoot"] is True and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]} and context["allowPrivilegeEscalation"] is False

    lines = kubectl("exec", "-n", apps, pod, "-c", "milvus", "--", "sh", "-c", PROBE, timeout=60).splitlines()
    facts = {tuple(line.split(" ", 1)) for line in lines if line.strip()}
    assert {("uid", str(MILVUS_UID)), ("gid", str(MILVUS_UID))} <= facts, lines
    assert {("read-only", "/milvus"), ("read-only", "/usr")} <= facts, lines
    assert {("writable", DATA_PATH), ("writable", SCRATCH_PATH)} <= facts, lines
    # embedded etcd and local storage live on the claim, written by uid 999
    assert {("data", "etcd"), ("data", "data")} <= facts, lines

    wait_until(lambda: milvus_condition(kubectl, apps)["status"] == "True", timeout=120,
               what="the LLMCache's MilvusReady condition")
