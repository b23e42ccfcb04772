"""hypothesis strategies for LLMCache specs a user (or an older CRD without our schema) can send:
any JSON value, and valid specs with fields broken in every way JSON allows."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

MODEL = {"name": "meta-llama/Llama-3.1-8B-Instruct", "revision": "2024-09-25"}

#: The spec's sections and their fields (camelCase, as in the CRD).
FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("name", "revision", "servedModelName"),
    "vllm": ("external", "image", "replicas", "gpus", "enablePrefixCaching", "maxModelLen", "extraArgs",
             "resources", "modelCacheClaim", "hfTokenSecret"),
    "redis": ("mode", "url", "image", "persistence", "storage", "maxmemory", "maxmemoryPolicy", "resources",
              "passwordSecret"),
    "milvus": ("mode", "uri", "image", "persistence", "storage", "resources"),
    "embedding": ("model", "device"),
    "cache": ("exact", "semantic", "maxTemperature", "tenantHeader"),
    "sidecar": ("image", "port", "metricsPort", "resources"),
}

#: Values that are almost right: the near misses a user writes.
NEAR_MISSES = (
    "", " ", "managed", "external", "cluster", "redis://h:6379/0", "redis://:pw@h/0", "redis://u:pw@h",
    "redis://h/0?password=pw", "redis+cluster://a:1,b:2", "http://x:8000", "ftp://x", "cuda", "tpu", "1Gi",
    "-1Gi", "lots", "true", "-1", "0", "1e400", "NaN", "Infinity", "--model=x", "--port", "a:b", "X Bad",
    "x" * 300, "é" * 50, "\u0000", "\n", "ß\u200b🙂", "Bad_Name",
)

json_scalars = (
    st.none() | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70) | st.integers(min_value=-3, max_value=70000)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30) | st.sampled_from(NEAR_MISSES)
)

#: Any JSON value (objects nest a few levels; keys are strings, as in JSON).
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)

def huge_strings(max_chars: int) -> st.SearchStrategy[str]:
    return st.sampled_from([size for size in (1000, 70_000, 1_000_000) if size <= max_chars]).map(lambda n: "é" * n)


@st.composite
def broken_specs(draw: st.DrawFn, max_changes: int = 3, max_chars: int = 1_000_000) -> dict[str, Any]:
    """A valid spec with 1..``max_changes`` fields (or whole sections, or unknown keys) set to anything
    (strings up to ``max_chars``: an API server stores objects of about 1.5 MB at most)."""
    spec: dict[str, Any] = {"model": dict(MODEL)}
    for _ in range(draw(st.integers(1, max_changes))):
        section = draw(st.sampled_from([*sorted(FIELDS), "<unknown>"]))
        value = draw(json_values | huge_strings(max_chars))
        if section == "<unknown>":
            spec[draw(st.text(min_size=1, max_size=100))] = value
        elif draw(st.integers(0, 5)) == 0:
            spec[section] = value
        elif isinstance(spec.setdefault(section, {}), dict):
            field = draw(st.sampled_from(FIELDS[section]) | st.text(min_size=1, max_size=12))
            spec[section][field] = value
    return spec


#: Specs of every shape: mostly near-valid ones (which reach the deep checks), some any JSON at all.
any_specs = st.one_of(broken_specs(), json_values)
