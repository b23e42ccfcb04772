"""Invalidation and revision signalling over the contract's data layout, for every caller.

One implementation of the key layout (DESIGN.md, "Data layout and invalidation") shared by the
sidecar (``/admin/invalidate``, catching up after a missed switch), the ``llmcache invalidate``
command and the operator's rollout.  The operator may import this module besides
``llmcache_sidecar.config`` (docs/rollout.md): it needs only ``redis`` at import time; Milvus
(``pymilvus``) is imported when a Milvus deletion runs.

- Redis entries ``llmcache:<cache>:<revision>:<tenant>:e:<sha256>``: deleted with ``SCAN`` +
  ``UNLINK`` in batches, which never blocks Redis the way ``KEYS`` / a huge ``DEL`` would.  On a
  Redis Cluster the SCAN covers every primary and each batch is unlinked slot by slot.
- Milvus collection ``llmcache_<cache>``: rows deleted by a filter on ``revision`` / ``tenant``.
- ``llmcache:<cache>:invalidations``: how many invalidations of the cache have begun (``INCR``
  before the scan).  A sidecar reads it before it calls the upstream and again after it stored
  the answer; when it changed, the answer may predate the invalidation and the sidecar deletes
  it: a ``SCAN`` does not see a key written after it passed, so the scan alone could leave it.
- ``llmcache:<cache>:active-revision``: the revision sidecars must write under (set by the
  operator at every switch; read by every sidecar whenever its events connection (re)starts).
- ``llmcache:<cache>:events``: the channel of ``revision-activated`` events.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

# REDIS_ERRORS: for the operator, which reaches Redis through this module
from llmcache_sidecar.redis_client import REDIS_ERRORS, RedisClient, open_redis  # noqa: F401

#: keys deleted per UNLINK (and the SCAN page size)
BATCH = 500
#: seconds a Milvus call may take before the invalidation gives up (and reports it)
MILVUS_TIMEOUT_SECONDS = 10.0
REVISION_ACTIVATED = "revision-activated"

_GLOB_SPECIAL = str.maketrans({char: "\\" + char for char in "*?[]\\"})


def key_pattern(cache: str, *, revision: str | None = None, tenant: str | None = None) -> str:
    """Redis glob for the entries of one cache, narrowed to a revision and/or a tenant.

    Neither part may contain ':' (cache names and revisions are validated, tenants match the
    tenant pattern), so ``*`` can only stand for whole key segments here."""
    def part(value: str | None) -> str:
        return "*" if value is None else value.translate(_GLOB_SPECIAL)

    return f"llmcache:{part(cache)}:{part(revision)}:{part(tenant)}:e:*"


def active_revision_key(cache: str) -> str:
    return f"llmcache:{cache}:active-revision"


def generation_key(cache: str) -> str:
    return f"llmcache:{cache}:invalidations"


def events_channel(cache: str) -> str:
    return f"llmcache:{cache}:events"


def valid_revision(value: object) -> bool:
    """What a sidecar accepts as a model revision (the rules of ``Settings.model_revision``)."""
    return (isinstance(value, str) and 0 < len(value) <= 128 and ":" not in value
            and not any(ch.isspace() for ch in value))


@dataclass(frozen=True)
class RevisionActivated:
    cache: str
    revision: str
    previous: str | None

    def encode(self) -> str:
        return json.dumps({"event": REVISION_ACTIVATED, "cache": self.cache, "revision": self.revision,
                           "previous": self.previous})

    @classmethod
    def decode(cls, raw: bytes | str) -> RevisionActivated | None:
        """The event in ``raw``, or None for anything else (other events, garbage)."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict) or data.get("event") != REVISION_ACTIVATED:
            return None
        cache, revision, previous = data.get("cache"), data.get("revision"), data.get("previous")
        if not isinstance(cache, str) or not isinstance(revision, str) or not valid_revision(revision):
            return None
        return cls(cache, revision, previous if isinstance(previous, str) else None)


@dataclass(frozen=True)
class Counts:
    exact: int
    semantic: int


async def unlink_matching(client: RedisClient, pattern: str, batch: int = BATCH) -> int:
    """Delete every key matching ``pattern``: ``SCAN`` + ``UNLINK`` in batches; return how many."""
    deleted = 0
    keys: list[Any] = []
    async for key in client.scan_iter(match=pattern, count=batch):
        keys.append(key)
        if len(keys) >= batch:
            deleted += await client.unlink(*keys)
            keys = []
    if keys:
        deleted += await client.unlink(*keys)
    return deleted


async def invalidate_redis(client: RedisClient, cache: str, *, revision: str | None = None,
                           tenant: str | None = None) -> int:
    """Delete one cache's exact entries (of one revision / tenant when given); return how many.

    Counts the invalidation first (:func:`generation_key`): an answer being stored meanwhile is
    then deleted by its writer, as the scan may not see it."""
    await client.incr(generation_key(cache))
    return await unlink_matching(client, key_pattern(cache, revision=revision, tenant=tenant))


def milvus_filter(*, revision: str | None = None, tenant: str | None = None) -> str:
    """The Milvus filter selecting those rows (every row when both are None)."""
    parts = []
    if revision is not None:
        parts.append(f"revision == {json.dumps(revision)}")
    if tenant is not None:
        parts.append(f"tenant == {json.dumps(tenant)}")
    return " and ".join(parts) or 'key != ""'


def _delete_milvus_rows(uri: str, cache: str, expression: str, token: str | None, timeout: float) -> int:
    from pymilvus import MilvusClient

    from llmcache_sidecar.tiers.milvus_store import collection_name, is_local

    if is_local(uri):
        from milvus_lite.server_manager import server_manager_instance

        started = server_manager_instance.start_and_get_uri(uri)
        if started is None:
            raise RuntimeError(f"cannot open Milvus Lite at {uri}")
        uri = started
    client = MilvusClient(uri=uri, token=token or "", timeout=timeout)
    try:
        collection = collection_name(cache)
        if not client.has_collection(collection, timeout=timeout):
            return 0
        rows = client.query(collection, filter=expression, output_fields=["count(*)"], timeout=timeout)
        found = int(rows[0]["count(*)"]) if rows else 0
        result = client.delete(collection, filter=expression, timeout=timeout)
        deleted = int(result.get("delete_count", 0)) if isinstance(result, dict) else len(result)
        return max(found, deleted)
    finally:
        client.close()


async def invalidate_milvus(uri: str, cache: str, *, revision: str | None = None, tenant: str | None = None,
                            token: str | None = None, timeout: float = MILVUS_TIMEOUT_SECONDS) -> int:
    """Delete one cache's semantic rows by filter (in a worker thread: pymilvus is synchronous);
    return how many there were.  A missing collection counts as nothing to delete."""
    expression = milvus_filter(revision=revision, tenant=tenant)
    return await asyncio.wait_for(
        asyncio.to_thread(_delete_milvus_rows, uri, cache, expression, token, timeout), timeout * 3)


def redis_client(url: str, password: str | None = None, timeout: float = 5.0) -> RedisClient:
    """A client for one-off calls: one server or a ``redis+cluster://`` (see ``redis_client``)."""
    return open_redis(url, password=password, timeout=timeout)


async def activate_revision(client: RedisClient, cache: str, revision: str, previous: str | None) -> int:
    """Record ``revision`` as the active one, then announce it; return how many subscribers heard."""
    await client.set(active_revision_key(cache), revision)
    heard: int = await client.publish(events_channel(cache), RevisionActivated(cache, revision, previous).encode())
    return heard
