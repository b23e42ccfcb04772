"""docs/sidecar.md's configuration table is the one the Settings model renders."""

from __future__ import annotations

from pathlib import Path

from llmcache_sidecar.configdoc import markdown_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "sidecar.md"


def test_settings_table_matches_the_model() -> None:
    text = DOC.read_text()
    start = text.index("\n", text.index("<!-- settings-table:start")) + 1
    end = text.index("<!-- settings-table:end -->")
    assert text[start:end] == markdown_table(), (
        "docs/sidecar.md is out of date: paste the output of `python -m llmcache_sidecar.configdoc` "
        "between the settings-table markers")
