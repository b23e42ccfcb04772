"""Open Redis from the URL a user gave: one server, or a Redis Cluster.

Every place that talks to Redis (the exact tier, the shared counters, the revision events, the
invalidations of the sidecar, the ``llmcache invalidate`` command and the operator) opens its
client here, so both kinds of Redis work everywhere.

URL forms (docs/cluster.md):

- ``redis://[user:password@]host[:port][/db]``, ``rediss://...``, ``unix:///path``: one server
  (:class:`redis.asyncio.Redis`);
- ``redis+cluster://[user:password@]host[:port][,host[:port]...][?option=value]`` and
  ``rediss+cluster://...`` (TLS): a Redis Cluster (:class:`redis.asyncio.RedisCluster`); each
  ``host:port`` is a startup node (one is enough, the others are found with ``CLUSTER SLOTS``);
  the database must be 0 (Redis Cluster has no other).

A password in the URL is used as given; without one, ``password`` (the Secret) is.

What makes the callers cluster-safe: every command names one key, except the batched lookups'
``MGET`` (the exact tier uses ``mget_nonatomic`` on a cluster: one ``MGET`` per slot) and
``UNLINK`` of a ``SCAN`` page, which redis-py splits by slot, and ``SCAN`` itself, which it runs
on every primary; the stats pipeline touches one hash.  Pub/sub: a ``PUBLISH`` reaches the subscribers of
every node; redis-py sends it to the node owning the channel's slot, where every
:func:`open_pubsub` subscription is, so the count it returns is still that of every subscriber.
"""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.exceptions import RedisClusterException, RedisError

RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"

#: cluster scheme -> the scheme of one of its nodes
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
DEFAULT_PORT = 6379
#: what a call may raise when Redis is unreachable or unusable: redis-py's cluster errors (no
#: node reachable, a slot not covered) are not all ``RedisError``
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)
#: connections per cluster node: as unbounded as a single server's pool (redis-py's default of
#: 100 would fail requests with MaxConnectionsError under a burst instead of opening more)
CLUSTER_MAX_CONNECTIONS_PER_NODE = 2**31 - 1


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def cluster_startup(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A ``redis+cluster://`` URL -> the plain URL of its first node (credentials, options) and
    every startup node as ``(host, port)``.  Raises ValueError for a URL without a node."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"not a Redis Cluster URL (redis+cluster:// or rediss+cluster://): {url!r}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    nodes = [_host_port(item) for item in hosts.split(",") if item.strip()]
    if not nodes:
        raise ValueError("a redis+cluster:// URL needs at least one host[:port]")
    first = hosts.split(",")[0].strip()
    return urlunsplit((scheme, f"{userinfo}{at}{first}", parts.path, parts.query, "")), nodes


def _host_port(item: str) -> tuple[str, int]:
    parsed = urlsplit(f"//{item.strip()}")
    try:
        port = parsed.port
    except ValueError as exc:
        raise ValueError(f"bad cluster node {item!r}: {exc}") from None
    if not parsed.hostname:
        raise ValueError(f"bad cluster node {item!r}: no host")
    return parsed.hostname, port or DEFAULT_PORT


def check_url(url: str) -> None:
    """Raise ValueError, saying why, unless :func:`open_redis` can use ``url`` (nothing is
    connected: a setting is refused at start-up, and by the operator, not at the first call)."""
    if not is_cluster_url(url):
        if url.partition("://")[0].lower() not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://")
        parse_url(url)
        return
    first, _ = cluster_startup(url)
    if parse_url(first).get("db"):
        raise ValueError("a Redis Cluster has only database 0")


def open_redis(url: str, *, password: str | None = None, timeout: float = 5.0, **options: Any) -> RedisClient:
    """A client for ``url`` (nothing is connected yet); ``options`` go to the redis-py client
    (``retry``, ``client_name``, ``decode_responses``...).  For a cluster, ``retry`` counts the
    attempts of a command across the cluster (after a node failed or a slot moved)."""
    settings: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, **options}
    if password:
        settings["password"] = password  # one in the URL wins (redis-py's from_url)
    if not is_cluster_url(url):
        return aioredis.Redis.from_url(url, **settings)
    first, nodes = cluster_startup(url)
    others = [ClusterNode(host, port) for host, port in nodes[1:]]
    return RedisCluster.from_url(first, startup_nodes=others, max_connections=CLUSTER_MAX_CONNECTIONS_PER_NODE,
                                 **settings)


async def open_pubsub(client: RedisClient) -> PubSub:
    """A pub/sub of ``client``; on a cluster it subscribes on the node owning the channel's slot
    (so the cluster's slot map is loaded first)."""
    if isinstance(client, RedisCluster):
        await client.initialize()
    return client.pubsub()

