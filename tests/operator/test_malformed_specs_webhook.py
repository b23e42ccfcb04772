"""The injection webhook meets malformed LLMCaches (no CRD schema, as with an older CRD): the pod is
admitted unchanged with a warning that says the LLMCache is invalid and why, never an injector
failure; valid LLMCaches beside them still get their sidecars."""

from __future__ import annotations

from typing import Any

import pytest

from tests.operator.conftest import NAMESPACE, Cluster
from tests.operator.test_malformed_specs import MALFORMED
from tests.webhook.conftest import StartInjector, start_injector  # noqa: F401  (the fixture)
from tests.webhook.pods import CACHE_SPEC, app_pod

CONTAINER_NAME = "llmcache-sidecar"


def pod_for(cache: str) -> dict[str, Any]:
    pod = app_pod(annotation=cache)
    pod["metadata"]["namespace"] = NAMESPACE
    return pod


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_a_pod_asking_for_a_malformed_cache_is_admitted_with_the_reason(
    cluster: Cluster, start_injector: StartInjector,  # noqa: F811
) -> None:
    injector = await start_injector()
    for name, (spec, _) in MALFORMED.items():
        await cluster.create_cache(name, spec)
    await cluster.create_cache("good", CACHE_SPEC)
    await injector.wait_until_indexed("good", NAMESPACE)
    for name, (_, fragment) in MALFORMED.items():
        response = await injector.review(pod_for(name), NAMESPACE, dry_run=True)
        assert response["allowed"] is True and "patch" not in response, name
        (warning,) = response["warnings"]
        assert f"LLMCache {NAMESPACE}/{name} is invalid" in warning and fragment in warning, warning
        assert "the pod runs without the cache sidecar" in warning
    pod = pod_for("good")
    patched = injector.patched(pod, await injector.review(pod, NAMESPACE))
    assert CONTAINER_NAME in [c["name"] for c in patched["spec"]["containers"]]
