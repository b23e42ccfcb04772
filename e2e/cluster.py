"""Thin helpers over ``kubectl`` and Helm (helm-python-sdk) for the end-to-end tests."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
CHART_DIR = REPO / "charts" / "llmcache"
T = TypeVar("T")


class CommandError(RuntimeError):
    """A command exited non-zero; the message carries its output."""


def run(args: Sequence[str], *, input: str | None = None, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise CommandError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def wait_until(check: Callable[[], T], *, timeout: float, what: str, interval: float = 2.0) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (CommandError, KeyError, IndexError, ValueError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval)


@dataclass(frozen=True)
class Kubectl:
    """``kubectl`` against the cluster of ``KUBECONFIG``."""

    kubeconfig: str

    def __call__(self, *args: str, input: str | None = None, timeout: float = 120, check: bool = True) -> str:
        return run(["kubectl", "--kubeconfig", self.kubeconfig, *args], input=input, timeout=timeout, check=check).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def apply(self, *objects: dict[str, Any]) -> None:
        self("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        args = ["get", kind, name, "--ignore-not-found", "-o", "name"]
        if namespace:
            args += ["-n", namespace]
        return bool(self(*args).strip())

    def labelled(self, kinds: str, selector: str, namespace: str) -> list[str]:
        """Names (kind/name) of the objects of ``kinds`` (comma-separated) matching ``selector``."""
        return self("get", kinds, "-n", namespace, "-l", selector, "-o", "name").split()

    def secret_value(self, name: str, key: str, namespace: str) -> str:
        data = self.json("get", "secret", name, "-n", namespace)["data"]
        return base64.b64decode(data[key]).decode()

    def current_context(self) -> str:
        return self("config", "current-context").strip()


def tool(name: str) -> str | None:
    return shutil.which(name)


def split_image(reference: str) -> dict[str, str]:
    """``registry/repo:tag`` -> chart image values ``{repository, tag}``."""
    repository, _, tag = reference.rpartition(":")
    if not repository or "/" in tag:
        return {"repository": reference, "tag": "latest"}
    return {"repository": repository, "tag": tag}


def build_image(dockerfile: Path, reference: str, target: str | None = None) -> None:
    args = ["docker", "build", "-f", str(dockerfile), "-t", reference]
    if target:
        args += ["--target", target]
    run([*args, str(REPO)], timeout=3600)


def load_into_kind(reference: str, cluster: str) -> None:
    run(["kind", "load", "docker-image", reference, "--name", cluster], timeout=900)


def kubeconfig_path() -> str | None:
    value = os.environ.get("KUBECONFIG", "")
    return value.split(os.pathsep)[0] if value else None
