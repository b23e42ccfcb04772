"""Starting and stopping: a sidecar stops cleanly whenever it is asked to, even right after start."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sidecar_settings
from tests.upstream import TestUpstream

#: generous: a clean stop takes milliseconds; this only turns a hang into a failure
STOP_BOUND_SECONDS = 15.0


@pytest.mark.parametrize("pause", [0.0, 0.005, 0.05, 0.3])
async def test_stops_promptly_right_after_start(upstream: TestUpstream, redis_server: Any, tmp_path: Path,
                                               pause: float) -> None:
    """Every background task (revision events, stats flush) must honour cancellation, whatever
    it was doing (connecting, subscribing, listening)."""
    from llmcache_sidecar.server import serve

    context = serve(sidecar_settings(upstream.url, tmp_path, redis_url=redis_server.url))
    await context.__aenter__()
    await asyncio.sleep(pause)
    stop = asyncio.ensure_future(context.__aexit__(None, None, None))
    done, _ = await asyncio.wait({stop}, timeout=STOP_BOUND_SECONDS)
    if not done:
        stuck = sorted(task.get_name() for task in asyncio.all_tasks() if task is not asyncio.current_task())
        stop.cancel()
        pytest.fail(f"the sidecar did not stop within {STOP_BOUND_SECONDS}s; tasks still running: {stuck}")
    stop.result()
