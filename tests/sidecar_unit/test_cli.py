"""The ``llmcache-sidecar`` command line: flags from the Settings model, clear errors, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmcache_sidecar.__main__ import build_parser, main, settings_from_args
from llmcache_sidecar.config import Settings

ENV = {"LLMCACHE_UPSTREAM_URL": "http://env:8000"}


def settings(argv: list[str], environ: dict[str, str]) -> Settings:
    return settings_from_args(build_parser().parse_args(argv), environ)


def test_every_non_secret_setting_has_a_flag() -> None:
    help_text = build_parser().format_help()
    for name in Settings.model_fields:
        flag = "--" + name.replace("_", "-")
        assert (flag in help_text) == (name not in ("admin_token", "redis_password")), name


def test_flags_override_environment_which_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text("upstream_url: http://file:8000\nttl_seconds: 10\ncache_name: from-file\n")
    environ = {**ENV, "LLMCACHE_CONFIG": str(config), "LLMCACHE_TTL_SECONDS": "20"}
    result = settings(["--ttl-seconds", "30", "--no-semantic-enabled"], environ)
    assert (result.upstream_url, result.ttl_seconds, result.cache_name, result.semantic_enabled) == \
        ("http://env:8000", 30, "from-file", False)
    assert settings(["--config", str(config)], {}).upstream_url == "http://file:8000"


@pytest.mark.parametrize(("argv", "environ", "named"), [
    ([], {}, "LLMCACHE_UPSTREAM_URL is required"),
    (["--upstream-url", "ftp://x"], {}, "--upstream-url"),
    (["--ttl-seconds", "-1"], ENV, "--ttl-seconds"),
    (["--listen", "nowhere"], ENV, "--listen"),
    ([], {**ENV, "LLMCACHE_MAX_TEMPERATURE": "9"}, "LLMCACHE_MAX_TEMPERATURE"),
    (["--cache-name", "a:b"], ENV, "--cache-name"),
    ([], {**ENV, "LLMCACHE_CONFIG": "/nonexistent/llmcache.yaml"}, "LLMCACHE_CONFIG=/nonexistent/llmcache.yaml"),
])
def test_config_errors_exit_2_naming_the_setting(argv: list[str], environ: dict[str, str], named: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv, environ) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmcache-sidecar: ") and named in err


def test_bad_choice_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--log-level", "loud"], ENV)
    assert exit_info.value.code == 2 and "--log-level" in capsys.readouterr().err


def test_console_entry_point_reports_config_errors() -> None:
    done = subprocess.run([sys.executable, "-m", "llmcache_sidecar", "--upstream-url", "nope"],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "--upstream-url='nope'" in done.stderr and "Traceback" not in done.stderr
