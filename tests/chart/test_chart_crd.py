"""The chart ships the one CRD of the repository, unchanged, behind crds.install and kept on uninstall."""

from __future__ import annotations

import kubernetes_validate
import yaml

from tests.chart.helmchart import CHART_DIR, KUBE_VERSIONS, REPO, VALUE_SETS, find, manifests, one

SOURCE = REPO / "crds" / "llmcache.dev_llmcaches.yaml"
CHART_COPY = CHART_DIR / "files" / "crds" / "llmcache.dev_llmcaches.yaml"


def test_chart_copy_of_the_crd_is_identical() -> None:
    assert CHART_COPY.read_bytes() == SOURCE.read_bytes(), (
        "charts/llmcache/files/crds/ differs from crds/: cp crds/llmcache.dev_llmcaches.yaml charts/llmcache/files/crds/"
    )


def test_rendered_crd_is_the_source_plus_keep_policy_and_labels() -> None:
    rendered = one(manifests(), "CustomResourceDefinition")
    source = yaml.safe_load(SOURCE.read_text())
    metadata = rendered["metadata"]
    assert metadata["annotations"]["helm.sh/resource-policy"] == "keep"
    assert metadata["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert {k: v for k, v in metadata["annotations"].items() if k != "helm.sh/resource-policy"} == source["metadata"].get("annotations", {})
    assert {k: v for k, v in rendered.items() if k != "metadata"} == {k: v for k, v in source.items() if k != "metadata"}
    assert metadata["name"] == source["metadata"]["name"] == "llmcaches.llmcache.dev"
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(rendered, version, strict=True)


def test_crds_install_false_leaves_the_crd_out() -> None:
    assert not find(manifests(VALUE_SETS["no-crds"]), "CustomResourceDefinition")
