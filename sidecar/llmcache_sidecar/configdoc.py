"""The configuration table of the docs, rendered from the Settings model (a test keeps
``docs/sidecar.md`` equal to it, so the docs cannot drift from the code).

Run ``python -m llmcache_sidecar.configdoc`` to print it.
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from pydantic_core import PydanticUndefined

from llmcache_sidecar.config import SECRET_FIELDS, Settings, env_name


def _default(value: Any) -> str:
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _meaning(name: str, description: str | None, annotation: Any) -> str:
    text = description or name.replace("_", " ")
    if get_origin(annotation) is Literal:
        text += " (" + ", ".join(f"`{choice}`" for choice in get_args(annotation)) + ")"
    if name in SECRET_FIELDS:
        text += "; environment only, no flag"
    return text


def markdown_table() -> str:
    lines = ["| variable | flag | meaning | default |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        flag = "" if name in SECRET_FIELDS else f"`--{name.replace('_', '-')}`"
        lines.append(f"| `{env_name(name)}` | {flag} | {_meaning(name, field.description, field.annotation)} "
                     f"| {_default(field.default)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
