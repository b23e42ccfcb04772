"""An external Redis with a password: the password lives in the user's Secret
(``spec.redis.passwordSecret``), reaches the sidecars as ``LLMCACHE_REDIS_PASSWORD`` through a
secretKeyRef and the operator through the API; a URL carrying a password is refused."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from llmcache_operator import kube, names
from llmcache_operator.settings import OperatorConfig
from llmcache_operator.sidecar_config import CONFIG_KEY
from llmcache_operator.spec import (
    URL_QUERY_PASSWORD,
    URL_USERINFO_PASSWORD,
    SpecError,
    parse_spec,
)
from llmcache_operator.webhook import InjectionOptions, injected_pod

from tests.operator.conftest import CRD_PATH, Cluster, StartOperator
from tests.operator.test_builders import K8S_VERSIONS, MODEL, all_manifests, context
from tests.operator.test_operator import EXTERNAL
from tests.operator.test_spec_and_crd import apply_defaults, spec_schema

SECRET = {"name": "redis-credentials", "key": "redis-password"}
WITH_SECRET: dict[str, Any] = {
    "model": MODEL, "redis": {"mode": "external", "url": "redis://cache-user@redis.example:6379/2", "passwordSecret": SECRET},
}
APP_POD: dict[str, Any] = {"metadata": {"name": "app", "namespace": "apps", "annotations": {"llmcache.dev/inject": "demo"}},
                           "spec": {"containers": [{"name": "app", "image": "app:1"}]}}


def sidecar_env(spec: dict[str, Any], native: bool) -> dict[str, Any]:
    pod = injected_pod(APP_POD, context(spec), InjectionOptions(native_sidecar=native))
    sidecar = next(c for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
                   if c["name"] == "llmcache-sidecar")
    return {item["name"]: item for item in sidecar["env"]}


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_sidecar_gets_the_password_from_the_users_secret(native: bool, version: str) -> None:
    env = sidecar_env(WITH_SECRET, native)
    assert env["LLMCACHE_REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "redis-credentials", "key": "redis-password", "optional": True},
    }
    pod = injected_pod(APP_POD, context(WITH_SECRET), InjectionOptions(native_sidecar=native))
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", **pod}, version, strict=True)


def test_the_key_defaults_to_password_and_no_secret_means_no_password() -> None:
    spec = {**WITH_SECRET, "redis": {**WITH_SECRET["redis"], "passwordSecret": {"name": "creds"}}}
    assert sidecar_env(spec, False)["LLMCACHE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    assert context(spec).redis_password_secret == ("creds", "password")
    without = {**WITH_SECRET, "redis": {"mode": "external", "url": "redis://redis.example:6379/0"}}
    assert "LLMCACHE_REDIS_PASSWORD" not in sidecar_env(without, False)


def test_the_configmap_and_manifests_carry_the_url_but_no_password() -> None:
    manifests = all_manifests(WITH_SECRET)
    assert [m["metadata"]["name"] for m in manifests if m["kind"] == "Secret"] == ["demo-admin"]
    assert "demo-redis" not in {m["metadata"]["name"] for m in manifests}, "no managed Redis"
    configmap = next(m for m in manifests if m["kind"] == "ConfigMap")
    config = yaml.safe_load(configmap["data"][CONFIG_KEY])
    assert config["redis_url"] == "redis://cache-user@redis.example:6379/2"
    assert "redis_password" not in config
    assert not any(m["metadata"]["name"] == "redis-credentials" for m in manifests), "the user's Secret is never written"


@pytest.mark.parametrize("url", [
    "redis://:hunter2@redis.example:6379/0",
    "redis://cache-user:hunter2@redis.example/0",
    "rediss://u:p@redis.example:6380",
    "redis+cluster://:hunter2@a:6379,b:6379",
    "unix://:hunter2@/run/redis.sock",
    "redis://redis.example:6379/0?password=hunter2",
    "redis://redis.example/0?db=1&password=hunter2",
])
def test_a_url_with_a_password_is_refused_pointing_at_the_secret_field(url: str) -> None:
    spec = {"model": MODEL, "redis": {"mode": "external", "url": url}}
    with pytest.raises(SpecError, match=r"spec\.redis: url must not contain a password.*redis\.passwordSecret") as caught:
        parse_spec(spec)
    assert "hunter2" not in str(caught.value), "the message never repeats the password"


@pytest.mark.parametrize("url", [
    "redis://redis.example:6379/0", "redis://cache-user@redis.example/0", "rediss://redis.example:6380",
    "redis+cluster://a:6379,b:6379", "unix:///run/redis.sock?db=1", "redis://redis.example/0?username=x",
])
def test_urls_without_a_password_pass(url: str) -> None:
    assert parse_spec({"model": MODEL, "redis": {"mode": "external", "url": url}}).redis.url == url


@pytest.mark.parametrize(("redis", "message"), [
    ({"passwordSecret": {"name": "creds"}}, "passwordSecret is for mode external"),
    ({"mode": "external", "url": "redis://h", "passwordSecret": {"name": "Not A Name"}}, "passwordSecret.name"),
    ({"mode": "external", "url": "redis://h", "passwordSecret": {"name": "creds", "key": "a/b"}}, "passwordSecret.key"),
    ({"mode": "external", "url": "redis://h", "passwordSecret": {"key": "k"}}, "passwordSecret.name: Field required"),
])
def test_a_wrong_secret_reference_is_refused(redis: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({"model": MODEL, "redis": redis})


def test_the_crd_knows_the_field_and_refuses_what_the_model_refuses() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    (version,) = crd["spec"]["versions"]
    schema = spec_schema(version)
    validator = jsonschema.Draft4Validator(schema)
    validator.validate(apply_defaults(schema, WITH_SECRET))
    redis = schema["properties"]["redis"]
    assert redis["properties"]["passwordSecret"]["properties"]["key"]["default"] == "password"
    for bad in ({"name": "Not A Name"}, {"name": "creds", "key": "a/b"}, {"key": "k"}):
        spec = {**WITH_SECRET, "redis": {**WITH_SECRET["redis"], "passwordSecret": bad}}
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(apply_defaults(schema, spec))
    rules = " ".join(rule["rule"] for rule in redis["x-kubernetes-validations"])
    # CEL matches() searches like re.search: the model and the API server use the same patterns
    assert f"matches('{URL_USERINFO_PASSWORD}')" in rules and f"matches('{URL_QUERY_PASSWORD}')" in rules
    assert "!has(self.passwordSecret)" in rules


async def test_the_operator_reads_stats_with_the_password_from_the_secret(
    cluster: Cluster, start_operator: StartOperator, redis_server: Any,
) -> None:
    """A real Redis whose only way in for this user is the password kept in the user's Secret."""
    client = redis_server.client()
    client.execute_command("ACL", "SETUSER", "llmcache-stats", "on", ">s3cret-pw", "~*", "+@all")
    try:
        client.hset(names.stats_key("ext"), mapping={"requests": 10, "hitsExact": 5})
        await cluster.create_object(kube.SECRETS, {
            "metadata": {"name": "redis-credentials"}, "type": "Opaque",
            "data": {"redis-password": base64.b64encode(b"s3cret-pw").decode()},
        })
        await start_operator(config=OperatorConfig(stats_interval_seconds=0.3))
        host = redis_server.url.removeprefix("redis://")
        redis = {"mode": "external", "url": f"redis://llmcache-stats@{host}", "passwordSecret": SECRET}
        await cluster.create_cache("ext", {**EXTERNAL, "redis": redis})
        stats = await cluster.wait_for(lambda: cluster.cache("ext").get("status", {}).get("stats"), what="stats")
        assert stats["requests"] == 10 and stats["hitRatio"] == 0.5
        assert "s3cret-pw" not in yaml.safe_dump(cluster.obj(kube.CONFIGMAPS, "ext-sidecar"))
    finally:
        client.execute_command("ACL", "DELUSER", "llmcache-stats")


async def test_a_missing_password_secret_is_reported_by_an_event(cluster: Cluster, operator: None) -> None:
    redis = {"mode": "external", "url": "redis://redis.example:6379/0", "passwordSecret": {"name": "not-there"}}
    await cluster.create_cache("ext", {**EXTERNAL, "redis": redis})
    events = await cluster.wait_for(lambda: cluster.events("RedisPasswordSecretMissing"), what="the Event")
    assert events[0]["type"] == "Warning" and "Secret not-there with key password" in events[0]["message"]
    assert cluster.cache("ext")["status"]["phase"] == "Ready", "the cache works (it passes through meanwhile)"
    await cluster.create_object(kube.SECRETS, {"metadata": {"name": "present"}, "data": {"password": "cHc="}})
    await cluster.patch_cache("ext", {"redis": {"passwordSecret": {"name": "present"}}})
    await cluster.wait_for(lambda: cluster.cache("ext")["status"].get("observedGeneration") == 2, what="the update")
    await cluster.settle()
    assert len(cluster.events("RedisPasswordSecretMissing")) == 1
