"""An external Redis Cluster in an LLMCache: the CRD schema and the operator's model accept its
URL, the sidecar ConfigMap carries it unchanged, and the status never shows its password."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml
from llmcache_operator.children import cache_context
from llmcache_operator.settings import OperatorConfig
from llmcache_operator.sidecar_config import CONFIG_KEY, sidecar_configmap
from llmcache_operator.spec import SpecError, parse_spec
from llmcache_operator.status import redact

from tests.operator.conftest import CRD_PATH

CLUSTER_URLS = [
    "redis+cluster://redis-cluster.data.svc:6379",
    "redis+cluster://node-0.redis:6379,node-1.redis:6379,node-2.redis:6379",
    "rediss+cluster://redis-cluster.data.svc:6380/0?ssl_cert_reqs=required",
]


def spec(url: str) -> dict[str, Any]:
    return {"model": {"name": "m", "revision": "r1"}, "redis": {"mode": "external", "url": url}}


def url_schema() -> dict[str, Any]:
    (version,) = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["redis"]["properties"]["url"]


@pytest.mark.parametrize("url", CLUSTER_URLS)
def test_a_cluster_url_is_accepted_and_reaches_the_sidecar_configmap(url: str) -> None:
    jsonschema.Draft4Validator(url_schema()).validate(url)
    assert parse_spec(spec(url)).redis.url == url
    ctx = cache_context("demo", "apps", spec(url), OperatorConfig())
    configmap = sidecar_configmap(ctx, "r1")
    assert yaml.safe_load(configmap["data"][CONFIG_KEY])["redis_url"] == url


@pytest.mark.parametrize("url", ["redis-cluster://h:6379", "cluster://h:6379", "redis+sentinel://h:26379"])
def test_other_schemes_stay_refused(url: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(url_schema()).validate(url)
    with pytest.raises(SpecError):
        parse_spec(spec(url))


def test_the_status_hides_a_cluster_urls_password_and_keeps_every_node() -> None:
    assert redact("redis+cluster://user:s3cret@n0:6379,n1:6379/0") == "redis+cluster://user:***@n0:6379,n1:6379/0"
    assert redact("redis+cluster://n0:6379,n1:6379") == "redis+cluster://n0:6379,n1:6379"


def test_a_cluster_url_the_sidecar_cannot_use_is_a_spec_error_not_a_crashing_sidecar() -> None:
    ctx = cache_context("demo", "apps", spec("redis+cluster://redis-cluster.data.svc:6379/2"), OperatorConfig())
    with pytest.raises(SpecError, match="redis_url: a Redis Cluster has only database 0"):
        sidecar_configmap(ctx, "r1")
