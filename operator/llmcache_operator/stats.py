"""Fleet-wide counters: every sidecar adds to the Redis hash ``llmcache:<cache>:stats``.

Reading them is best effort (the operator may not reach an in-cluster Redis when it runs
outside the cluster): any failure gives None and the status keeps its previous numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from llmcache_sidecar import invalidation

COUNTERS = ("requests", "hitsExact", "hitsSemantic", "tokensSaved")
TIMEOUT_SECONDS = 3.0


def stats_from_counters(raw: Mapping[bytes | str, bytes | str]) -> dict[str, Any]:
    """``status.stats`` from the hash's fields; unknown or malformed fields count as 0."""
    values: dict[str, int] = {}
    decoded = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    for name in COUNTERS:
        value = decoded.get(name, 0)
        try:
            values[name] = max(0, int(float(value.decode() if isinstance(value, bytes) else value)))
        except (TypeError, ValueError):
            values[name] = 0
    hits = values["hitsExact"] + values["hitsSemantic"]
    ratio = round(hits / values["requests"], 4) if values["requests"] else 0.0
    return {**values, "hitRatio": min(ratio, 1.0)}


async def read_stats(url: str, password: str | None, key: str, logger: logging.Logger) -> dict[str, Any] | None:
    client = invalidation.redis_client(url, password, timeout=TIMEOUT_SECONDS)  # one server or a cluster
    try:
        raw = await client.hgetall(key)
    except invalidation.REDIS_ERRORS as exc:
        logger.debug(f"stats not refreshed: Redis {url} unreachable ({exc})")
        return None
    finally:
        await client.aclose()
    return stats_from_counters(raw)
