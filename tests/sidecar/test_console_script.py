"""The real ``llmcache-sidecar`` console script, configured from the environment."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.conftest import free_port
from tests.sidecar.calls import HIT, MISS, chat, user
from tests.upstream import TestUpstream, expected_chat

SCRIPT = shutil.which("llmcache-sidecar")
pytestmark = pytest.mark.skipif(SCRIPT is None, reason="llmcache-sidecar not installed (pip install -e .)")


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCACHE_")}
    env.update({f"LLMCACHE_{k.upper()}": v for k, v in settings.items()})
    return env


async def _wait_listening(port: int, process: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if process.returncode is not None:
            raise AssertionError(f"llmcache-sidecar exited with {process.returncode} before listening")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise TimeoutError(f"llmcache-sidecar not listening on {port} after {timeout}s") from None
            await asyncio.sleep(0.05)


@pytest.fixture
async def script_sidecar(upstream: TestUpstream, redis_server: Any, tmp_path: Any) -> AsyncIterator[tuple[str, Any]]:
    api_port, metrics_port = free_port(), free_port()
    env = _env(upstream_url=upstream.url, listen=f"127.0.0.1:{api_port}", metrics_listen=f"127.0.0.1:{metrics_port}",
               redis_url=redis_server.url, semantic_enabled="false", milvus_uri=str(tmp_path / "m.db"), cache_name="script")
    process = await asyncio.create_subprocess_exec(SCRIPT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await _wait_listening(api_port, process)
        yield f"http://127.0.0.1:{api_port}/v1", process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_console_script_serves_and_caches(script_sidecar: tuple[str, Any], upstream: TestUpstream, redis_server: Any) -> None:
    url, process = script_sidecar
    body = {"model": "test-model", "messages": user("through the console script"), "temperature": 0}
    async with openai.AsyncOpenAI(base_url=url, api_key="test", max_retries=0, timeout=30) as client:
        first = await chat(client, **body)
        second = await chat(client, stream=True, **body)
    assert (first.cache, second.cache) == (MISS, HIT)
    assert second.content == expected_chat(body)[0]
    assert upstream.calls["/v1/chat/completions"] == 1
    assert any(key.startswith("llmcache:script:default::e:") for key in redis_server.scan())
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 15) in (0, -signal.SIGTERM)


@pytest.mark.parametrize(("settings", "named"), [
    ({}, "LLMCACHE_UPSTREAM_URL"),
    ({"upstream_url": "ftp://nowhere"}, "LLMCACHE_UPSTREAM_URL"),
    ({"upstream_url": "http://127.0.0.1:1", "ttl_seconds": "-5"}, "LLMCACHE_TTL_SECONDS"),
    ({"upstream_url": "http://127.0.0.1:1", "listen": "nowhere"}, "LLMCACHE_LISTEN"),
])
def test_bad_configuration_exits_with_a_clear_message(settings: dict[str, str], named: str) -> None:
    result = subprocess.run([SCRIPT], env=_env(**settings), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert named in output, output
    assert "Traceback" not in output, "a configuration error is a message, not a crash"


async def test_sigterm_right_after_start_exits(script_sidecar: tuple[str, Any]) -> None:
    """A pod being deleted: SIGTERM as soon as the sidecar listens ends the process."""
    _, process = script_sidecar
    process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(process.wait(), 15)  # only turns a hang into a failure
    except TimeoutError:
        pytest.fail("llmcache-sidecar did not exit within 15 s of SIGTERM")
    assert code in (0, -signal.SIGTERM)
