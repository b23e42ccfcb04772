"""Fixtures for the end-to-end suite: a real cluster (``KUBECONFIG``), the images, the namespaces.

The suite runs only when ``KUBECONFIG`` names a cluster it may use (a disposable kind or k3d
cluster: it installs the chart, creates and deletes namespaces); otherwise every test is
skipped with the reason. Settings (environment):

- ``LLMCACHE_E2E_OPERATOR_IMAGE`` / ``LLMCACHE_E2E_SIDECAR_IMAGE``: image references
  (default ``llmcache-operator:e2e`` / ``llmcache-sidecar:e2e``);
- ``LLMCACHE_E2E_BUILD``: ``1`` (default) builds both images from this checkout with
  ``docker build``; ``0`` uses them as they are (already pushed or loaded);
- on a kind cluster (context ``kind-<name>``) built images are loaded with ``kind load``;
- ``LLMCACHE_E2E_MANAGED_MILVUS=1``: the journey's cache gets a managed Milvus instead of Milvus
  Lite inside the sidecar. ``test_managed_milvus.py`` always runs one (the Milvus image is a few
  GB: allow for its pull on a fresh cluster).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from e2e.cluster import (
    CHART_DIR,
    REPO,
    Kubectl,
    build_image,
    kubeconfig_path,
    load_into_kind,
    tool,
)
from e2e.workloads import release_values

E2E_DIR = Path(__file__).resolve().parent
RELEASE = "llmcache-e2e"
CRD = "llmcaches.llmcache.dev"
SLOW = 600  # image pulls (Redis) on a fresh cluster
SKIP_REASON = (
    "the end-to-end suite needs a real cluster: set KUBECONFIG to a disposable kind/k3d cluster "
    "(see docs/install.md, `make e2e`)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The hook sees every collected test: only this folder's are end-to-end (`pytest tests e2e`).
    e2e_items = [item for item in items if item.path.is_relative_to(E2E_DIR)]
    reason = None
    if not kubeconfig_path():
        reason = SKIP_REASON
    elif tool("kubectl") is None:
        reason = "the end-to-end suite needs kubectl on PATH"
    if reason:
        for item in e2e_items:
            item.add_marker(pytest.mark.skip(reason=reason))
    for item in e2e_items:
        item.add_marker(pytest.mark.e2e)


@dataclass(frozen=True)
class Images:
    operator: str
    sidecar: str


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    path = kubeconfig_path()
    assert path, SKIP_REASON
    return Kubectl(path)


@pytest.fixture(scope="session")
def images(kubectl: Kubectl) -> Images:
    found = Images(
        operator=os.environ.get("LLMCACHE_E2E_OPERATOR_IMAGE", "llmcache-operator:e2e"),
        sidecar=os.environ.get("LLMCACHE_E2E_SIDECAR_IMAGE", "llmcache-sidecar:e2e"),
    )
    if os.environ.get("LLMCACHE_E2E_BUILD", "1") != "0":
        if tool("docker") is None:
            pytest.fail("LLMCACHE_E2E_BUILD=1 needs docker (or set LLMCACHE_E2E_BUILD=0 with pushed images)")
        build_image(REPO / "operator" / "Dockerfile", found.operator)
        build_image(REPO / "sidecar" / "Dockerfile", found.sidecar)
        context = kubectl.current_context()
        if context.startswith("kind-"):
            if tool("kind") is None:
                pytest.fail(f"context {context} is a kind cluster: `kind` is needed to load the images")
            for reference in (found.operator, found.sidecar):
                load_into_kind(reference, context.removeprefix("kind-"))
    return found


@dataclass(frozen=True)
class Namespaces:
    system: str  # the release (operator, webhook)
    apps: str  # the LLMCache, the test server, the app


@pytest.fixture(scope="session")
def namespaces(kubectl: Kubectl) -> Iterator[Namespaces]:
    suffix = uuid.uuid4().hex[:6]
    found = Namespaces(system=f"llmcache-e2e-system-{suffix}", apps=f"llmcache-e2e-{suffix}")
    kubectl("create", "namespace", found.apps)
    yield found
    # Whatever the test left (it removes everything itself when it passes).
    kubectl("delete", "llmcaches.llmcache.dev", "--all", "-n", found.apps, "--ignore-not-found", "--wait=false", check=False, timeout=60)
    for namespace in (found.apps, found.system):
        kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False, timeout=60)


@dataclass(frozen=True)
class Release:
    helm: helm_python.Config
    objects: list[dict[str, Any]]  # what the chart created

    def one(self, kind: str) -> dict[str, Any]:
        (found,) = [o for o in self.objects if o["kind"] == kind]
        return found


@pytest.fixture()
def release(kubectl: Kubectl, images: Images, namespaces: Namespaces) -> Iterator[Release]:
    """The chart installed as the user would; uninstalled again whatever happens to the test."""
    crd_owner = None
    if kubectl.exists("crd", CRD):  # kept by an earlier release (helm.sh/resource-policy: keep)
        crd_owner = kubectl.json("get", "crd", CRD)["metadata"].get("annotations", {}).get("meta.helm.sh/release-name")
    values = release_values(images.operator, images.sidecar, install_crd=crd_owner in (None, RELEASE))
    with helm_python.Config(kubeconfig_path=kubectl.kubeconfig, namespace=namespaces.system) as helm:
        installed = helm.install(CHART_DIR, RELEASE, values, namespace=namespaces.system, create_namespace=True, wait="watcher", timeout=SLOW)
        try:
            yield Release(helm, [doc for doc in yaml.safe_load_all(installed["manifest"]) if doc])
        finally:
            delete_caches(kubectl, namespaces.apps)
            helm.uninstall(RELEASE, ignore_not_found=True, wait="watcher", timeout=300)


def delete_caches(kubectl: Kubectl, namespace: str) -> None:
    kubectl("delete", "llmcaches.llmcache.dev", "--all", "-n", namespace, "--ignore-not-found", "--timeout=120s", check=False, timeout=180)
