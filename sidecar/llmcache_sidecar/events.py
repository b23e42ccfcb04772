"""Follow the operator's revision switches: the ``llmcache:<cache>:events`` channel on Redis.

The follower subscribes to the channel and, once the subscription is confirmed, reads the
active revision from the Redis key ``llmcache:<cache>:active-revision`` (falling back to the
mounted config file when the key is missing, e.g. after Redis lost its data).  Subscribing
*before* reading means nothing can fall between the two: a switch is either in the key already
or arrives as an event.  The same happens after every reconnection (Redis restarted, the
connection was cut, pings went unanswered), so a sidecar that missed an event catches up as soon
as it is connected again.

Why the key and not only the file: kubelet refreshes a mounted ConfigMap only after its sync
period plus its cache TTL (a minute or more), and the sidecar would have to poll the file; the
key is written by the operator before it announces the switch, so it is current the moment a
sidecar can hear about the switch at all.

A switch (:func:`apply_revision`) makes the new revision the one every request from then on is
keyed and stored under (a request started before keeps its captured revision and does not store
its answer), recycles the pooled upstream connections (keep-alive connections through the
Service stay on the old pods), and drops the old revision's entries from the in-process vector
index.  A sidecar that caught up late may have written entries under the old revision after the
operator deleted them: it deletes that revision's entries itself, in both tiers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from llmcache_sidecar import state
from llmcache_sidecar.config import CONFIG_FILE_ENV, Settings
from llmcache_sidecar.invalidation import (
    RevisionActivated,
    active_revision_key,
    events_channel,
    valid_revision,
)
from llmcache_sidecar.redis_client import (
    REDIS_ERRORS,
    RedisClient,
    open_pubsub,
    open_redis,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class FollowerOptions:
    #: a PING on the subscription when nothing arrived for this long
    keepalive_seconds: float = 5.0
    #: the connection counts as dead after this many keep-alive periods of silence
    dead_after_periods: int = 3
    backoff_initial_seconds: float = 0.1
    backoff_max_seconds: float = 5.0
    timeout_seconds: float = 5.0


def revision_in_file(path: Path | None) -> str | None:
    """``model_revision`` of the mounted config file, if it names a valid one."""
    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        log.warning("cannot re-read %s: %s", path, exc)
        return None
    revision = data.get("model_revision") if isinstance(data, dict) else None
    return revision if valid_revision(revision) else None


def apply_revision(app: web.Application, revision: str) -> str | None:
    """Switch ``app`` to ``revision``; return the previous revision, or None if nothing changed."""
    revision_state = app[state.REVISION]
    previous = revision_state.active
    if not revision_state.switch(revision):
        return None
    app[state.UPSTREAM].recycle()
    semantic = app[state.SEMANTIC_TIER]
    forget = getattr(semantic, "forget", None)
    if forget is not None:
        forget(previous)
    return previous


async def delete_left_behind(app: web.Application, revision: str) -> None:
    """Best effort: delete what this sidecar may have stored under ``revision`` after the
    operator's invalidation (it had not heard of the switch yet)."""
    settings = app[state.SETTINGS]
    try:
        exact = await app[state.EXACT_TIER].invalidate(settings.cache_name, revision=revision)
        semantic_tier = app[state.SEMANTIC_TIER]
        semantic = await semantic_tier.invalidate(revision=revision) if semantic_tier is not None else 0
    except Exception as exc:  # noqa: BLE001 - best effort: the operator's invalidation did the bulk
        log.warning("could not delete the entries left under revision %s: %s", revision, exc)
        return
    log.info("deleted %d exact and %d semantic entries left under revision %s", exact, semantic, revision)


class RevisionFollower:
    def __init__(self, app: web.Application, config_file: Path | None, options: FollowerOptions) -> None:
        self.app = app
        self.settings: Settings = app[state.SETTINGS]
        self.config_file = config_file
        self.options = options
        self.channel = events_channel(self.settings.cache_name)
        #: set once the first subscription is up and the active revision was read (tests)
        self.synced = asyncio.Event()
        self.connections = 0
        #: how the subscription shows in ``CLIENT LIST`` (one per sidecar process)
        self.client_name = f"llmcache-events-{os.getpid()}"

    def _client(self) -> RedisClient:
        assert self.settings.redis_url is not None
        # no retries: a reconnection the library made by itself would skip the catch-up read
        return open_redis(self.settings.redis_url, password=self.settings.redis_password,
                          timeout=self.options.timeout_seconds, retry=Retry(NoBackoff(), 0),
                          health_check_interval=0, client_name=self.client_name)

    async def run(self) -> None:
        delay = self.options.backoff_initial_seconds
        while True:
            client = self._client()
            try:
                async with await open_pubsub(client) as pubsub:
                    await self._subscribe(pubsub)
                    log.info("following revision events on %s", self.channel)
                    first = self.connections == 0
                    self.connections += 1
                    await self._catch_up(client, first=first)
                    self.synced.set()
                    delay = self.options.backoff_initial_seconds
                    await self._listen(pubsub)
            except REDIS_ERRORS as exc:  # TimeoutError is an OSError
                log.warning("revision events: %s; reconnecting in %.1fs", exc or type(exc).__name__, delay)
            except Exception:  # noqa: BLE001 - following revisions must survive anything, and retry
                log.exception("revision events: unexpected error; reconnecting in %.1fs", delay)
            finally:
                await client.aclose()
            _raise_if_cancelling()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.options.backoff_max_seconds)

    async def _subscribe(self, pubsub: Any) -> None:
        await pubsub.subscribe(self.channel)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.timeout_seconds
        while loop.time() < deadline:
            message = await _read(pubsub, timeout=self.options.timeout_seconds)
            if message is not None and message["type"] == "subscribe":
                return
        raise TimeoutError(f"no confirmation of the subscription to {self.channel}")

    async def _catch_up(self, client: RedisClient, *, first: bool) -> None:
        raw = await client.get(active_revision_key(self.settings.cache_name))
        revision = raw.decode() if isinstance(raw, bytes) else raw
        source = "the Redis key"
        if not valid_revision(revision):
            revision, source = revision_in_file(self.config_file), f"{self.config_file}"
        if revision is None:
            return
        previous = apply_revision(self.app, revision)
        if previous is None:
            return
        log.info("revision %s is active (read from %s)", revision, source)
        if not first:
            await delete_left_behind(self.app, previous)

    async def _listen(self, pubsub: Any) -> None:
        loop = asyncio.get_running_loop()
        keepalive = self.options.keepalive_seconds
        last_heard = last_ping = loop.time()
        while True:
            message = await _read(pubsub, timeout=keepalive, ignore_subscribe_messages=True)
            now = loop.time()
            if message is None:
                if now - last_heard > keepalive * self.options.dead_after_periods:
                    raise TimeoutError(f"Redis did not answer for {now - last_heard:.0f}s")
                if now - last_ping >= keepalive:
                    await pubsub.ping()
                    last_ping = now
                continue
            last_heard = now
            if message["type"] != "message":
                continue
            event = RevisionActivated.decode(message["data"])
            if event is None or event.cache != self.settings.cache_name:
                continue
            if apply_revision(self.app, event.revision) is not None:
                log.info("revision %s activated (previous %s)", event.revision, event.previous)


async def _read(pubsub: Any, **options: Any) -> Any:
    """``pubsub.get_message(**options)``, honouring a cancellation that an earlier call (or this
    one) swallowed: on Python 3.11 ``asyncio.wait_for`` inside redis-py may drop a
    ``CancelledError`` (cpython gh-86296), which would leave the follower running forever."""
    _raise_if_cancelling()
    message = await pubsub.get_message(**options)
    _raise_if_cancelling()
    return message


def _raise_if_cancelling() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


FOLLOWER = web.AppKey("revision_follower", RevisionFollower)


async def events_context(app: web.Application) -> AsyncIterator[None]:
    """Follow the revision events while the app runs (only with Redis: the channel lives there)."""
    settings = app[state.SETTINGS]
    if not settings.redis_url:
        yield
        return
    config_file = os.environ.get(CONFIG_FILE_ENV)
    follower = RevisionFollower(app, Path(config_file) if config_file else None, FollowerOptions())
    app[FOLLOWER] = follower
    task = asyncio.get_running_loop().create_task(follower.run(), name="llmcache-revision-events")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
