"""``llmcache invalidate``: the invalidation by hand, against a real Redis and a Milvus Lite server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest

from llmcache_sidecar.tiers.milvus_store import MilvusStore
from llmcache_sidecar.tiers.vector_index import IndexEntry
from tests.semantic.conftest import MilvusServer

SCRIPT = shutil.which("llmcache")
pytestmark = pytest.mark.skipif(SCRIPT is None, reason="llmcache not installed (pip install -e .)")
CACHE = "cli"
#: (revision, tenant) of each stored entry
ENTRIES = [("r1", ""), ("r1", "alice"), ("r1", "bob"), ("r2", ""), ("r2", "alice")]


def key(revision: str, tenant: str, index: int) -> str:
    return f"llmcache:{CACHE}:{revision}:{tenant}:e:{index:064x}"


async def fill(redis_server: Any, milvus: MilvusServer) -> None:
    redis_server.client().mset({key(rev, tenant, i): b"{}" for i, (rev, tenant) in enumerate(ENTRIES)})
    store = MilvusStore(milvus.uri, CACHE, dim=4)
    await store.connect()
    vector = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    await store.upsert([IndexEntry(key(rev, tenant, i), vector, rev, tenant, "scope", 1.0, 4e9)
                        for i, (rev, tenant) in enumerate(ENTRIES)])
    await store.aclose()


def invalidate(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCACHE_")}
    assert SCRIPT is not None
    return subprocess.run([SCRIPT, "invalidate", "--cache", CACHE, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


async def test_invalidate_a_revision_then_a_tenant_then_everything(redis_server: Any, milvus_server: MilvusServer) -> None:
    await fill(redis_server, milvus_server)
    backends = ["--redis-url", redis_server.url, "--milvus-uri", milvus_server.uri]
    done = await asyncio.to_thread(invalidate, "--revision", "r1", *backends, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"cache": CACHE, "revision": "r1", "exactEntries": 3, "semanticEntries": 3}
    assert sorted(redis_server.scan(f"llmcache:{CACHE}:*:e:*")) == sorted(key(r, t, i) for i, (r, t) in enumerate(ENTRIES)
                                                                          if r == "r2")
    done = await asyncio.to_thread(invalidate, "--tenant", "alice", *backends)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"cache {CACHE}, tenant 'alice': deleted 1 exact entries, 1 semantic entries"
    done = await asyncio.to_thread(invalidate, "--all", *backends, "--json")
    assert json.loads(done.stdout)["exactEntries"] == 1 and json.loads(done.stdout)["semanticEntries"] == 1
    assert redis_server.scan(f"llmcache:{CACHE}:*") == [f"llmcache:{CACHE}:invalidations"]
    assert redis_server.client().get(f"llmcache:{CACHE}:invalidations") == b"3", \
        "each invalidation is counted (sidecars storing meanwhile drop their answer)"


async def test_invalidate_reports_an_unreachable_backend_and_refuses_bad_input(redis_server: Any) -> None:
    done = await asyncio.to_thread(invalidate, "--revision", "r1", "--redis-url", "redis://127.0.0.1:1/0")
    assert done.returncode == 1 and "Redis at redis://127.0.0.1:1/0" in done.stderr
    bad = await asyncio.to_thread(invalidate, "--revision", "a:b", "--redis-url", redis_server.url)
    assert bad.returncode == 2 and "not a revision" in bad.stderr
    neither = await asyncio.to_thread(invalidate, "--all")
    assert neither.returncode == 2 and "--redis-url" in neither.stderr
