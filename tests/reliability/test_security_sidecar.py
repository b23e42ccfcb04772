"""The sidecar's security promises: the API on loopback, admin never on the API port, secrets
(Redis password, admin token) never in logs, even at debug level."""

from __future__ import annotations

import logging
import socket
from typing import Any

import aiohttp
import pytest

from llmcache_sidecar.config import ConfigError, Settings, load_settings, parse_host_port
from tests.sidecar.calls import HIT, MISS, chat, user
from tests.upstream import TestUpstream

BODY: dict[str, Any] = {"model": "test-model", "messages": user("hello"), "temperature": 0}
TOKEN = "admin-tok-5c1e7d"
PASSWORD = "redis-pw-9a8b7c"


def test_the_api_listens_on_loopback_by_default() -> None:
    settings = Settings(upstream_url="http://up")
    assert parse_host_port(settings.listen)[0] == "127.0.0.1"
    assert parse_host_port(load_settings({"LLMCACHE_UPSTREAM_URL": "http://up"}).listen)[0] == "127.0.0.1"


def _external_addresses() -> list[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return []
    return sorted({info[4][0] for info in infos if not info[4][0].startswith("127.")})


async def test_a_default_sidecar_is_unreachable_off_loopback(sidecar_factory: Any) -> None:
    host, _ = parse_host_port(Settings(upstream_url="http://up").listen)
    handle = await sidecar_factory(listen=f"{host}:0")
    port = int(handle.api_url.rsplit(":", 1)[1])
    for address in _external_addresses():
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()
    socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.parametrize(("method", "path"), [("GET", "/admin/stats"), ("POST", "/admin/invalidate"),
                                              ("GET", "/metrics"), ("GET", "/readyz")])
async def test_admin_never_answers_on_the_api_port(sidecar_factory: Any, upstream: TestUpstream, method: str,
                                                   path: str) -> None:
    handle = await sidecar_factory(admin_token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.request(method, handle.api_url + path, json={"all": True}, headers=auth) as response:
            assert response.status == 404
        if path.startswith("/admin"):
            async with http.request(method, handle.metrics_url + path, json={"all": True}, headers=auth) as response:
                assert response.status == 200, "the same call works on the metrics listener"
    assert not upstream.requests, "nor is it forwarded upstream"


async def test_secrets_never_reach_the_logs(sidecar_factory: Any, client_for: Any, redis_server: Any,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    redis_server.client().config_set("requirepass", PASSWORD)
    try:
        handle = await sidecar_factory(redis_url=redis_server.url, redis_password=PASSWORD, admin_token=TOKEN,
                                       log_level="debug")
        client = client_for(handle)
        assert (await chat(client, **BODY)).cache == MISS
        assert (await chat(client, **BODY)).cache == HIT
        async with aiohttp.ClientSession() as http:
            for token in (TOKEN, "wrong", TOKEN[:-1]):
                async with http.get(handle.metrics_url + "/admin/stats",
                                    headers={"Authorization": f"Bearer {token}"}) as response:
                    assert response.status == (200 if token == TOKEN else 401)
        wrong = await sidecar_factory(redis_url=redis_server.url, redis_password=PASSWORD + "x", admin_token=TOKEN,
                                      log_level="debug")
        assert (await chat(client_for(wrong), **BODY)).cache in ("bypass", HIT, MISS)
    finally:
        import redis

        redis.Redis(host="127.0.0.1", port=redis_server.port, password=PASSWORD).config_set("requirepass", "")
    with pytest.raises(ConfigError) as caught:
        load_settings({"LLMCACHE_UPSTREAM_URL": "http://up", "LLMCACHE_ADMIN_TOKEN": TOKEN,
                       "LLMCACHE_REDIS_PASSWORD": PASSWORD, "LLMCACHE_TTL_SECONDS": "-1"}, {"redis_password": 5})
    logging.getLogger("test").error("%s", caught.value)
    assert any(r.levelno == logging.DEBUG for r in caplog.records), "debug logging was on"
    logged = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    assert TOKEN not in logged and PASSWORD not in logged
