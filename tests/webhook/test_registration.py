"""How the webhook module plugs into the operator, and how it reads the API server's version."""

from __future__ import annotations

import kopf
import pytest
from llmcache_operator.admission import register, supports_native_sidecars
from llmcache_operator.runtime import Runtime
from llmcache_operator.settings import OperatorConfig, SettingsError


@pytest.mark.parametrize(
    ("version", "native"),
    [
        ({"major": "1", "minor": "29"}, True),
        ({"major": "1", "minor": "30+"}, True),  # GKE/EKS style
        ({"major": "1", "minor": "28"}, False),
        ({"major": "2", "minor": "0"}, True),
        ({"major": "", "minor": ""}, False),
        ({}, False),
    ],
)
def test_native_sidecars_from_1_29(version: dict, native: bool) -> None:
    assert supports_native_sidecars(version) is native


def test_registers_an_index_a_startup_and_a_pod_mutation() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, Runtime(config=OperatorConfig()), environ={"LLMCACHE_WEBHOOK_NAMESPACE": "ops"})
    assert [h.id for h in registry._webhooks.get_all_handlers()] == ["llmcache-inject"]
    assert [h.id for h in registry._indexing.get_all_handlers()] == ["llmcache_specs"]
    assert [h.id for h in registry._activities.get_all_handlers()] == ["llmcache-webhook-server"]


def test_disabled_registers_nothing() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, Runtime(config=OperatorConfig()), environ={"LLMCACHE_WEBHOOK_ENABLED": "false"})
    assert registry._webhooks.get_all_handlers() == [] and registry._activities.get_all_handlers() == []


def test_a_bad_setting_stops_the_operator_with_its_name() -> None:
    with pytest.raises(SettingsError, match="LLMCACHE_WEBHOOK_FAILURE_POLICY"):
        register(kopf.OperatorRegistry(), Runtime(config=OperatorConfig()), environ={"LLMCACHE_WEBHOOK_FAILURE_POLICY": "Sometimes"})
