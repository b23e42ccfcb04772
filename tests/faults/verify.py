"""After the faults: is every stored entry whole and right?

Every Redis entry of the run's cache is decoded and compared with what the test upstream says to
the request it is stored under (found by computing the key of every distinct request sent, with
the sidecar's own key builder); a value no request maps to, a partial answer, an error or a
wrong text is a *broken entry*.  Every Milvus row must point to the key of a request that was
sent (a row whose Redis entry is gone, as after Redis restarts empty, only costs a miss: it is
counted as dangling, not broken).  The semantic tier's in-process index must mirror the Milvus
collection exactly (after its pending writes are flushed): same keys on both sides.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from llmcache_sidecar.config import Settings
from llmcache_sidecar.entry import CorruptEntry, Entry
from llmcache_sidecar.keys import KeyBuilder
from llmcache_sidecar.proxy import is_complete
from llmcache_sidecar.tiers.milvus_store import collection_name

from tests.faults.workload import PATHS, Call, expected


@dataclass
class EntryCheck:
    redis_entries: int = 0
    milvus_rows: int = 0
    #: Milvus rows whose Redis entry is gone (harmless: a miss)
    dangling_rows: int = 0
    #: what is wrong with each broken entry (empty: none)
    broken: list[str] = field(default_factory=list)
    #: the keys of the whole, right Redis entries (each must now be served as a hit)
    good_keys: set[str] = field(default_factory=set)
    #: ``created_at`` (unix seconds) of every Milvus row
    milvus_created: list[float] = field(default_factory=list)
    #: keys in the tier's in-process index but not in Milvus, and the other way round
    index_only: set[str] = field(default_factory=set)
    milvus_only: set[str] = field(default_factory=set)


def exact_keys(settings: Settings, calls: list[Call]) -> dict[str, Call]:
    """The exact-tier key of each distinct request (as the sidecar computes it)."""
    builder = KeyBuilder(settings)
    keys: dict[str, Call] = {}
    for call in calls:
        parsed = builder.parse(call.kind, orjson.dumps(call.body), PATHS[call.kind], {}, settings.model_revision,
                               semantic=False)
        assert parsed.cache is not None, f"the load must only send cacheable requests: {call.body}"
        keys[parsed.cache.exact_key] = call
    return keys


def entry_problem(value: bytes, call: Call | None) -> str | None:
    """What is wrong with one stored value (None: it is whole and right)."""
    if call is None:
        return "stored under a key no request of the run has"
    try:
        entry = Entry.decode(value)
        answer = orjson.loads(entry.body)
    except (CorruptEntry, orjson.JSONDecodeError) as exc:
        return f"undecodable: {exc}"
    if entry.kind != call.kind or not isinstance(answer, dict) or not is_complete(answer, call.kind):
        return f"incomplete or of another kind: {value[:200]!r}"
    choice = answer["choices"][0]
    content = choice["message"]["content"] if call.kind == "chat" else choice.get("text")
    if (content, choice["finish_reason"]) != expected(call.kind, call.body):
        return f"wrong answer stored: {content!r}"
    return None


def check_redis(redis: Any, settings: Settings, keys: dict[str, Call]) -> EntryCheck:
    result = EntryCheck()
    client = redis.client()
    for raw_key in client.scan_iter(match=f"llmcache:{settings.cache_name}:*:e:*", count=1000):
        key = raw_key.decode()
        value = client.get(raw_key)
        if value is None:  # expired meanwhile
            continue
        result.redis_entries += 1
        problem = entry_problem(value, keys.get(key))
        if problem is None:
            result.good_keys.add(key)
        else:
            result.broken.append(f"redis {key}: {problem}")
    return result


def check_milvus(uri: str, settings: Settings, keys: dict[str, Call], index_keys: set[str],
                 result: EntryCheck) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=10)
    try:
        rows = client.query(collection_name(settings.cache_name), filter="", output_fields=["key", "created_at"],
                             limit=16384)
    finally:
        client.close()
    result.index_only = index_keys - {row["key"] for row in rows}
    result.milvus_only = {row["key"] for row in rows} - index_keys
    for row in rows:
        result.milvus_rows += 1
        result.milvus_created.append(float(row["created_at"]))
        if row["key"] not in keys:
            result.broken.append(f"milvus row {row['key']}: no request of the run has this key")
        elif row["key"] not in result.good_keys:
            result.dangling_rows += 1


async def check_entries(redis: Any, milvus_uri: str, settings: Settings, calls: list[Call],
                        index_keys: set[str]) -> EntryCheck:
    keys = exact_keys(settings, calls)
    result = await asyncio.to_thread(check_redis, redis, settings, keys)
    await asyncio.to_thread(check_milvus, milvus_uri, settings, keys, index_keys, result)
    return result
