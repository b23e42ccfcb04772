"""Regressions the fault suite found in the sidecar's failure paths (one test per bug)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from llmcache_sidecar.tiers.exact import RedisExactTier
from tests.conftest import sidecar_settings


async def test_redis_restarted_the_exact_tier_does_not_fail_on_dead_pooled_connections(
        redis_server: Any, tmp_path: Path) -> None:
    """Connections pooled before a Redis restart are dead, and redis-py does not always notice
    before it sends a command on one.  Each used to fail one more call after Redis was back and
    put the tier into its one-second back-off again (the fault suite saw Redis recoveries of
    several seconds under load).  A command on a dead connection is now sent once more on a
    new one; with Redis back, no call fails."""
    tier = RedisExactTier.from_settings(sidecar_settings("http://unused", tmp_path, redis_url=redis_server.url))
    try:
        await asyncio.gather(*(tier.set(f"k{n}", b"v", 60) for n in range(8)))  # 8 pooled connections
        await asyncio.to_thread(redis_server.stop)
        await asyncio.to_thread(redis_server.start)  # same port, empty
        for n in range(8):
            assert await tier.get(f"k{n}") is None
            await tier.set(f"k{n}", b"again", 60)
        assert await tier.get("k0") == b"again"
    finally:
        await tier.close()
