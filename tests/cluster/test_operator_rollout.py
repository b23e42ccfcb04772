"""The operator's rollout end to end with an external Redis Cluster: the same scenarios as
``tests/rollout/test_rollout.py`` (real kopf on the emulator, two ``llmcache-sidecar`` processes
configured by the operator's ConfigMap, a Milvus Lite server), with ``spec.redis.url`` a
``redis+cluster://`` URL: every sidecar switches, and the operator's invalidation empties every
node of the old revision's entries."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.conftest import RedisClusterServer
from tests.rollout import conftest as rollout_fixtures
from tests.rollout.test_rollout import (
    test_a_request_in_flight_across_the_switch_is_not_stored_under_the_new_revision,
    test_a_revision_rollout_switches_every_sidecar_and_invalidates_the_old_revision,
)

world = rollout_fixtures.world
upstream = rollout_fixtures.upstream
operator_config = rollout_fixtures.operator_config
kmock_options = rollout_fixtures.kmock_options
emulator = rollout_fixtures.emulator
cluster = rollout_fixtures.cluster
start_operator = rollout_fixtures.start_operator
milvus_server = rollout_fixtures.milvus_server

__all__ = [
    "test_a_request_in_flight_across_the_switch_is_not_stored_under_the_new_revision",
    "test_a_revision_rollout_switches_every_sidecar_and_invalidates_the_old_revision",
]


class ClusterAsRedisServer:
    """What the rollout scenarios use of their ``redis_server``, answered by the whole cluster."""

    def __init__(self, redis_cluster: RedisClusterServer) -> None:
        self.redis_cluster = redis_cluster

    @property
    def url(self) -> str:
        return self.redis_cluster.url

    def scan(self, pattern: str = "*") -> list[str]:
        return self.redis_cluster.keys(pattern)

    def client(self) -> Any:
        return self.redis_cluster.cluster_client()


@pytest.fixture
def redis_server(redis_cluster: RedisClusterServer) -> ClusterAsRedisServer:
    return ClusterAsRedisServer(redis_cluster)
