"""``speculative_upstream`` as a setting: off by default, from the environment, and from the
LLMCache resource through the operator's sidecar ConfigMap (the behaviour is tested end to end in
tests/semantic/test_speculative.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from llmcache_sidecar.config import load_settings

ENV = {"LLMCACHE_UPSTREAM_URL": "http://up:8000"}
CRD = Path(__file__).resolve().parents[2] / "crds" / "llmcache.dev_llmcaches.yaml"


def test_off_by_default_and_on_from_the_environment() -> None:
    assert load_settings(ENV).speculative_upstream is False
    assert load_settings({**ENV, "LLMCACHE_SPECULATIVE_UPSTREAM": "true"}).speculative_upstream is True


def rendered_settings(cache: dict[str, Any]) -> dict[str, Any]:
    from llmcache_operator.context import CacheContext
    from llmcache_operator.settings import OperatorConfig
    from llmcache_operator.sidecar_config import render_sidecar_config
    from llmcache_operator.spec import parse_spec

    spec = parse_spec({"model": {"name": "m", "revision": "r1"}, "cache": cache})
    return yaml.safe_load(render_sidecar_config(CacheContext("demo", "apps", spec, OperatorConfig()), "r1"))


def test_operator_passes_speculative_upstream_to_the_sidecar(tmp_path: Path) -> None:
    assert "speculative_upstream" not in rendered_settings({}), "off unless asked for"
    rendered = rendered_settings({"semantic": {"speculativeUpstream": True}})
    assert rendered["speculative_upstream"] is True
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(rendered))
    assert load_settings({"LLMCACHE_CONFIG": str(config)}).speculative_upstream is True


def test_crd_schema_takes_a_boolean_only() -> None:
    crd = yaml.safe_load(CRD.read_text())
    semantic = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["cache"][
        "properties"]["semantic"]
    field = semantic["properties"]["speculativeUpstream"]
    assert (field["type"], field["default"]) == ("boolean", False)
    jsonschema.validate(True, field)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("yes", field)
