"""The CRD and the operator's spec model say the same thing: defaults, limits, cross-field rules."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from llmcache_operator.children import cache_context
from llmcache_operator.settings import OperatorConfig
from llmcache_operator.spec import SpecError, parse_spec

from tests.operator.conftest import CRD_PATH

MINIMAL = {"model": {"name": "m", "revision": "r1"}}


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    return only


def spec_schema(version: dict[str, Any]) -> dict[str, Any]:
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it (absent fields with a default get it)."""
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    result = dict(value)
    for name, sub in schema["properties"].items():
        if name not in result and "default" in sub:
            result[name] = copy.deepcopy(sub["default"])
        if name in result:
            result[name] = apply_defaults(sub, result[name])
    return result


def test_the_crd_is_a_valid_customresourcedefinition(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, "1.29", strict=True)


def test_names_status_and_printer_columns(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "llmcaches.llmcache.dev"
    assert crd["spec"]["names"]["shortNames"] == ["llmc"]
    assert crd["spec"]["scope"] == "Namespaced"
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}
    assert columns == {"Phase": ".status.phase", "Revision": ".status.activeRevision",
                       "Hit Ratio": ".status.stats.hitRatio", "Age": ".metadata.creationTimestamp"}


def test_crd_defaults_equal_the_operator_defaults(version: dict[str, Any]) -> None:
    from_crd = apply_defaults(spec_schema(version), MINIMAL)
    from_model = parse_spec(MINIMAL).model_dump(by_alias=True, exclude_none=True)
    assert from_crd == from_model


def test_a_fully_defaulted_spec_is_accepted_by_the_crd_schema(version: dict[str, Any]) -> None:
    full = parse_spec(MINIMAL).model_dump(by_alias=True, exclude_none=True)
    jsonschema.Draft4Validator(spec_schema(version)).validate(full)


# Specs both the schema and the model refuse (the schema's part, without the CEL rules).
SCHEMA_INVALID = [
    {"model": {"name": "m"}},
    {"model": {"name": "m", "revision": "a:b"}},
    {"model": {"name": "m", "revision": "r"}, "vllm": {"replicas": 0}},
    {"model": {"name": "m", "revision": "r"}, "vllm": {"gpus": -1}},
    {"model": {"name": "m", "revision": "r"}, "redis": {"mode": "cluster"}},
    {"model": {"name": "m", "revision": "r"}, "redis": {"maxmemory": "lots"}},
    {"model": {"name": "m", "revision": "r"}, "redis": {"maxmemoryPolicy": "lru"}},
    {"model": {"name": "m", "revision": "r"}, "redis": {"storage": "big"}},
    {"model": {"name": "m", "revision": "r"}, "embedding": {"device": "tpu"}},
    {"model": {"name": "m", "revision": "r"}, "cache": {"semantic": {"threshold": 0}}},
    {"model": {"name": "m", "revision": "r"}, "cache": {"semantic": {"threshold": 1.5}}},
    {"model": {"name": "m", "revision": "r"}, "cache": {"maxTemperature": 3}},
    {"model": {"name": "m", "revision": "r"}, "cache": {"tenantHeader": "bad header"}},
    {"model": {"name": "m", "revision": "r"}, "sidecar": {"port": 70000}},
    {"model": {"name": "m", "revision": "r"}, "vllm": {"resources": {"limits": {"memory": "lots"}}}},
    {"model": {"name": "m", "revision": "r"}, "vllm": {"external": {"url": "ftp://x"}}},
]


@pytest.mark.parametrize("spec", SCHEMA_INVALID, ids=lambda spec: yaml.safe_dump(spec, default_flow_style=True).strip())
def test_schema_and_model_refuse_the_same_specs(version: dict[str, Any], spec: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(spec_schema(version)).validate(apply_defaults(spec_schema(version), spec))
    with pytest.raises(SpecError):
        parse_spec(spec)


# Cross-field rules: CEL rules in the CRD, the same checks in the model.
CROSS_FIELD = [
    ({"redis": {"mode": "external"}}, "spec.redis: mode external needs url"),
    ({"milvus": {"mode": "external"}}, "spec.milvus: mode external needs uri"),
    ({"cache": {"semantic": {"threshold": 0.9, "targetPrecision": 0.9}}}, "set threshold or targetPrecision"),
    ({"sidecar": {"port": 9000, "metricsPort": 9000}}, "port and metricsPort must differ"),
    ({"vllm": {"extraArgs": ["--max-model-len=4096"]}}, "extraArgs must not set --max-model-len"),
]


@pytest.mark.parametrize(("extra", "message"), CROSS_FIELD)
def test_cross_field_rules_name_what_to_fix(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({**MINIMAL, **extra})


def test_every_cross_field_rule_is_also_a_cel_rule(crd: dict[str, Any]) -> None:
    text = CRD_PATH.read_text()
    for fragment in ("self.mode != 'external' || self.url != ''", "self.mode != 'external' || self.uri != ''",
                     "!(has(self.threshold) && has(self.targetPrecision))", "self.port != self.metricsPort",
                     "max-model-len", "self.metadata.name.size() <= 45"):
        assert fragment in text


def test_a_name_too_long_for_the_children_is_refused() -> None:
    with pytest.raises(SpecError, match="at most 45"):
        cache_context("x" * 46, "apps", MINIMAL, OperatorConfig())
    assert cache_context("x" * 45, "apps", MINIMAL, OperatorConfig()).name == "x" * 45


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"model": {"name": "m"}, "redis": {"mode": "external"}, "vllm": {"replicas": 0}})
    message = str(caught.value)
    assert "spec.model.revision" in message and "spec.redis" in message and "spec.vllm.replicas" in message
