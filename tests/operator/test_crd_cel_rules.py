"""The CRD's CEL rules (``x-kubernetes-validations``), evaluated by a CEL implementation (cel-python,
RE2 regexes as the API server's), agree with the operator's spec model.

Without this, a rule is first evaluated by a real API server: a typo would make ``helm install``
fail, a wrong rule would refuse good specs or let bad ones through to the operator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmcache_operator.spec import SpecError, parse_spec

from tests.operator.conftest import CRD_PATH
from tests.operator.spec_strategies import MODEL, broken_specs
from tests.operator.test_redis_password_secret import WITH_SECRET
from tests.operator.test_spec_and_crd import CROSS_FIELD, MINIMAL, apply_defaults

CEL = celpy.Environment()


def crd_root_schema() -> dict[str, Any]:
    (version,) = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


ROOT = crd_root_schema()
SPEC_SCHEMA = ROOT["properties"]["spec"]
SPEC_VALIDATOR = jsonschema.Draft4Validator(SPEC_SCHEMA)


def rules_with_values(schema: dict[str, Any], value: Any, path: str) -> Iterator[tuple[str, dict[str, str], Any]]:
    """(path, rule, the value the rule sees) for every rule whose node is present in ``value``."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule, value
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                yield from rules_with_values(sub, value[key], f"{path}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from rules_with_values(schema["items"], item, f"{path}[{index}]")


def cel_failures(spec: dict[str, Any], name: str = "demo") -> list[str]:
    """The messages of the CEL rules a defaulted ``spec`` breaks (as the API server would list them)."""
    obj = {"metadata": {"name": name}, "spec": apply_defaults(SPEC_SCHEMA, spec)}
    failures = []
    for path, rule, value in rules_with_values(ROOT, obj, "self"):
        program = CEL.program(CEL.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            failures.append(f"{path}: {rule['message']}")
    return failures


def pruned(schema: dict[str, Any], value: Any) -> Any:
    """``value`` without the fields the schema does not know: what the API server stores."""
    if isinstance(value, dict) and "properties" in schema:
        return {key: pruned(schema["properties"][key], item) for key, item in value.items() if key in schema["properties"]}
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {key: pruned(schema["additionalProperties"], item) for key, item in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [pruned(schema["items"], item) for item in value]
    return value


def model_refuses(spec: dict[str, Any]) -> bool:
    try:
        parse_spec(spec)
    except SpecError:
        return True
    return False


def test_every_rule_compiles() -> None:
    rules = [rule for _, rule, _ in rules_with_values(ROOT, {"metadata": {}, "spec": apply_defaults(SPEC_SCHEMA, WITH_SECRET)}, "")]
    assert len(rules) >= 8
    for rule in rules:
        CEL.compile(rule["rule"])


@pytest.mark.parametrize(("extra", "message"), CROSS_FIELD)
def test_the_rules_refuse_what_the_model_refuses(extra: dict[str, Any], message: str) -> None:
    spec = {**MINIMAL, **extra}
    assert model_refuses(spec)
    assert cel_failures(spec), f"no CEL rule refuses {spec}"


@pytest.mark.parametrize("spec", [
    MINIMAL, WITH_SECRET,
    {**MINIMAL, "redis": {"mode": "external", "url": "redis+cluster://a:1,b:2"}},
    {**MINIMAL, "vllm": {"extraArgs": ["--dtype=half", "--max-num-seqs", "8"]}},
    {**MINIMAL, "cache": {"semantic": {"targetPrecision": 0.95}}},
])
def test_the_rules_accept_what_the_model_accepts(spec: dict[str, Any]) -> None:
    assert not model_refuses(spec)
    assert cel_failures(spec) == []


@pytest.mark.parametrize("url", ["redis://:pw@h:6379/0", "redis://u:pw@h", "redis://h/0?password=pw", "redis+cluster://:pw@a,b"])
def test_a_password_in_the_url_is_refused_by_a_rule(url: str) -> None:
    failures = cel_failures({**MINIMAL, "redis": {"mode": "external", "url": url}})
    assert failures == ["self.spec.redis: redis.url must not contain a password; put it in a Secret and name it in redis.passwordSecret"]


def test_the_name_rule() -> None:
    assert cel_failures(MINIMAL, name="x" * 46) and not cel_failures(MINIMAL, name="x" * 45)


def _some(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


#: Specs that pass the structural schema and vary what the CEL rules look at.
cross_field_specs = st.fixed_dictionaries({
    "model": st.just(MODEL),
    "redis": _some(
        mode=st.sampled_from(["managed", "external"]),
        url=st.sampled_from(["", "redis://h", "redis://:pw@h", "redis://u:pw@h/0", "redis://h/0?password=x",
                             "redis://h/0?db=1&password=x", "redis://u@h", "rediss+cluster://a,b", "unix:///s?db=1"]),
        passwordSecret=st.just({"name": "creds"}),
    ),
    "milvus": _some(mode=st.sampled_from(["managed", "external"]), uri=st.sampled_from(["", "http://m:19530"])),
    "cache": st.fixed_dictionaries({"semantic": _some(threshold=st.sampled_from([0.5, 0.9]), targetPrecision=st.just(0.9))}),
    "sidecar": _some(port=st.sampled_from([8080, 9090]), metricsPort=st.sampled_from([8080, 9090])),
    "vllm": _some(extraArgs=st.lists(st.sampled_from(
        ["--dtype=half", "--port=1", "--max-model-len", "--model", "--served-model-name=x", "--enable-prefix-caching",
         "--tensor-parallel-size=2", "--host", "--modelx", "x"]), max_size=3)),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(cross_field_specs | broken_specs(max_changes=2, max_chars=1000))
def test_a_spec_the_schema_admits_passes_the_rules_exactly_when_the_model_accepts_it(spec: dict[str, Any]) -> None:
    """What passes the structural schema on a real API server (unknown fields pruned) reaches the
    CEL rules; from there on, the rules and the model must agree."""
    spec = pruned(SPEC_SCHEMA, spec)
    if not SPEC_VALIDATOR.is_valid(apply_defaults(SPEC_SCHEMA, spec)):
        return
    assert bool(cel_failures(spec)) == model_refuses(spec), (cel_failures(spec), spec)
