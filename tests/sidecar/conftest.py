"""Fixtures of the end-to-end sidecar tests: the same tests run on both exact tiers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest


@pytest.fixture(params=["redis", "memory"])
async def tier_sidecar(request: pytest.FixtureRequest, sidecar_factory: Callable[..., Any]) -> Any:
    """A sidecar on the Redis tier, then (second run) on the in-process tier: same semantics."""
    if request.param == "redis":
        redis_server = request.getfixturevalue("redis_server")
        return await sidecar_factory(redis_url=redis_server.url)
    return await sidecar_factory(redis_url=None)


@pytest.fixture
def client(tier_sidecar: Any, client_for: Callable[..., Any]) -> Any:
    return client_for(tier_sidecar)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for what the openai client cannot send (bad JSON, huge bodies, admin)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
