"""The test harness reads back what the emulator holds: namespaced and cluster-scoped objects."""

from __future__ import annotations

from llmcache_operator import kube

from tests.operator.conftest import NAMESPACE, OTHER_NAMESPACE, Cluster, resource_key

CRD_NAME = "llmcaches.llmcache.dev"


async def test_obj_reads_namespaced_objects_in_the_tests_namespace_or_another(cluster: Cluster) -> None:
    cluster.emulator.objects[resource_key(kube.CONFIGMAPS), NAMESPACE, "here"] = {"data": {"k": "1"}}
    cluster.emulator.objects[resource_key(kube.CONFIGMAPS), OTHER_NAMESPACE, "there"] = {"data": {"k": "2"}}
    assert cluster.obj(kube.CONFIGMAPS, "here") == {"data": {"k": "1"}}
    assert cluster.obj(kube.CONFIGMAPS, "there", OTHER_NAMESPACE) == {"data": {"k": "2"}}
    assert cluster.obj(kube.CONFIGMAPS, "there") is None
    assert cluster.obj(kube.CONFIGMAPS, "absent") is None
    assert cluster.names(kube.CONFIGMAPS) == {"here"}
    copy = cluster.obj(kube.CONFIGMAPS, "here")
    copy["data"]["k"] = "changed"
    assert cluster.obj(kube.CONFIGMAPS, "here") == {"data": {"k": "1"}}  # a copy, not the stored object


async def test_obj_reads_cluster_scoped_objects_without_a_namespace(cluster: Cluster) -> None:
    crd = cluster.obj(kube.CRDS, CRD_NAME)
    assert crd is not None and crd["metadata"]["name"] == CRD_NAME
    assert cluster.names(kube.CRDS) == {CRD_NAME}
    cluster.serve(kube.MUTATING_WEBHOOK_CONFIGURATIONS, namespaced=False)
    cluster.emulator.objects[resource_key(kube.MUTATING_WEBHOOK_CONFIGURATIONS), None, "hooks"] = {"webhooks": []}
    assert cluster.obj(kube.MUTATING_WEBHOOK_CONFIGURATIONS, "hooks") == {"webhooks": []}


async def test_obj_follows_creation_and_deletion_through_the_api(cluster: Cluster) -> None:
    created = await cluster.create_cache("demo", {"model": {"name": "m", "revision": "r1"}})
    stored = cluster.obj(kube.LLMCACHES, "demo")
    assert stored is not None and stored["metadata"]["uid"] == created["metadata"]["uid"]
    await cluster.delete_cache("demo")
    assert cluster.obj(kube.LLMCACHES, "demo") is None
    assert "demo" not in cluster.names(kube.LLMCACHES)
