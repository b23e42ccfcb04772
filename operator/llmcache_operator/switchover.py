"""Carry out the rollout decisions of :mod:`rollout`: the status updates, and the switch itself.

The switch, once a rollout is committed (the Service and the sidecar ConfigMap already name the
new revision, applied by the caller from the plan):

0. (managed vLLM) give kube-proxy ``rollout_propagation_seconds`` to apply the Service switch:
   until then new connections may still reach old pods, and the sidecars, still keying under the
   old revision, store what those answer where the invalidation will delete it;
1. set ``llmcache:<cache>:active-revision`` and publish ``revision-activated`` on
   ``llmcache:<cache>:events`` (sidecars switch at once, and drop their keep-alive connections
   to the old pods; see ``llmcache_sidecar.events``);
2. delete the previous revision's Deployment (also when Redis is unreachable: its GPUs are not
   held hostage by the cache, and with the Service switched nothing new reaches it);
3. delete every entry of the previous revision from Redis (SCAN + UNLINK in batches) and Milvus
   (delete by filter), through ``llmcache_sidecar.invalidation``;
4. one status patch: ``activeRevision``, the invalidation record, ``rollout`` cleared.

Every step is idempotent, so a switch interrupted anywhere (operator restart, Redis or Milvus
unreachable: a :class:`kopf.TemporaryError`) is simply run again from the top.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, NoReturn

import kopf
from llmcache_sidecar import invalidation

from . import names
from . import status as cache_status
from .context import CacheContext
from .kube import DEPLOYMENTS, LLMCACHES, SECRETS, KubeApi
from .rollout import (
    RevisionPlan,
    Rollout,
    invalidation_record,
    next_step,
    plan_revisions,
    with_invalidation,
)
from .settings import OperatorConfig

RETRY_DELAY_SECONDS = 5


@dataclass(frozen=True)
class Advanced:
    #: the revision the sidecars should be on after this step
    active: str
    #: the rollout just committed: plan and apply again (the Service and ConfigMap switch)
    replan: bool = False


async def live_status(api: KubeApi, ctx: CacheContext) -> dict[str, Any]:
    fresh = await api.get(LLMCACHES, ctx.namespace, ctx.name)
    return dict((fresh or {}).get("status") or {})


async def current_plan(api: KubeApi, ctx: CacheContext) -> RevisionPlan:
    """The revisions to run and serve now, from the spec and the live status."""
    return plan_revisions(ctx.spec.model.revision, await live_status(api, ctx),
                          external=ctx.spec.vllm.is_external, now=cache_status.now_rfc3339())


async def advance(api: KubeApi, ctx: CacheContext, plan: RevisionPlan, config: OperatorConfig,
                  logger: logging.Logger) -> Advanced:
    """Move the rollout of ``plan`` on by one step (the children of ``plan`` are applied)."""
    if plan.rollout is None:
        if plan.first and ctx.spec.redis.mode == "external":
            await _record_first_revision(api, ctx, plan.active, logger)
        if plan.abandoned:
            logger.info(f"rollout abandoned: revision {plan.active} is wanted again")
            await _patch_status(api, ctx, {"rollout": None})
        return Advanced(plan.active)
    new_deployment = None
    if not ctx.spec.vllm.is_external:
        new_deployment = await api.get(DEPLOYMENTS, ctx.namespace,
                                       names.vllm_deployment_name(ctx.name, plan.rollout.revision))
    step = next_step(plan, new_deployment, now=cache_status.now_rfc3339(),
                     deadline_seconds=config.rollout_deadline_seconds)
    assert step.rollout is not None
    if step.action == "switch" and plan.rollout.phase != step.rollout.phase:
        logger.info(f"revision {step.rollout.revision} is ready: switching from {step.rollout.previous}")
        await _patch_status(api, ctx, {"rollout": step.rollout.as_status()})
        return Advanced(step.rollout.revision, replan=True)
    if step.action != "switch":
        if step.rollout.as_status() != (await live_status(api, ctx)).get("rollout"):
            if step.action == "fail" and plan.rollout.phase != step.rollout.phase:
                logger.warning(step.rollout.message)
            await _patch_status(api, ctx, {"rollout": step.rollout.as_status()})
        return Advanced(plan.active)
    await switch(api, ctx, step.rollout, config, logger)
    return Advanced(step.rollout.revision)


async def switch(api: KubeApi, ctx: CacheContext, rollout: Rollout, config: OperatorConfig,
                 logger: logging.Logger) -> None:
    """Steps 1-4 of the module docstring; raises :class:`kopf.TemporaryError` if Redis or Milvus
    cannot be reached (the rollout stays ``Switching`` and says so)."""
    cache, previous, revision = ctx.name, rollout.previous, rollout.revision
    if not ctx.spec.vllm.is_external and not rollout.previous_removed:
        await asyncio.sleep(config.rollout_propagation_seconds)
    password = await redis_password(api, ctx)
    client = invalidation.redis_client(ctx.redis_url, password)
    redis_where = f"Redis at {cache_status.redact(ctx.redis_url)}"
    try:
        try:
            heard = await invalidation.activate_revision(client, cache, revision, previous)
        except invalidation.REDIS_ERRORS as exc:
            rollout = await _retire_previous(api, ctx, rollout)
            await _unreachable(api, ctx, rollout, redis_where, exc)
        rollout = await _retire_previous(api, ctx, rollout)
        try:
            exact = await invalidation.invalidate_redis(client, cache, revision=previous)
        except invalidation.REDIS_ERRORS as exc:
            await _unreachable(api, ctx, rollout, redis_where, exc)
    finally:
        await client.aclose()
    try:
        semantic = await invalidation.invalidate_milvus(ctx.milvus_uri, cache, revision=previous)
    except Exception as exc:  # noqa: BLE001 - pymilvus raises many kinds; all mean "try again"
        await _unreachable(api, ctx, rollout, f"Milvus at {cache_status.redact(ctx.milvus_uri)}", exc)
    logger.info(f"revision {revision} activated ({heard} sidecars listening); invalidated {exact} exact and "
                f"{semantic} semantic entries of revision {previous}")
    now = cache_status.now_rfc3339()
    history = (await live_status(api, ctx)).get("invalidations")
    await _patch_status(api, ctx, {
        "activeRevision": revision,
        "rollout": None,
        "invalidations": with_invalidation(history, invalidation_record(previous, exact, semantic, now)),
    })


async def _record_first_revision(api: KubeApi, ctx: CacheContext, revision: str, logger: logging.Logger) -> None:
    """Best effort: an external Redis may still hold the active-revision key of an earlier cache of
    the same name, which sidecars would trust over their configuration."""
    client = invalidation.redis_client(ctx.redis_url, await redis_password(api, ctx))
    try:
        await client.set(invalidation.active_revision_key(ctx.name), revision)
    except invalidation.REDIS_ERRORS as exc:
        logger.warning(f"could not record revision {revision} in Redis at {cache_status.redact(ctx.redis_url)}: {exc}")
    finally:
        await client.aclose()


async def _retire_previous(api: KubeApi, ctx: CacheContext, rollout: Rollout) -> Rollout:
    """Delete the previous revision's Deployment (once: the rollout remembers it)."""
    if rollout.previous_removed or ctx.spec.vllm.is_external:
        return rollout
    if rollout.previous != rollout.revision:
        await api.delete(DEPLOYMENTS, ctx.namespace, names.vllm_deployment_name(ctx.name, rollout.previous))
    retired = dataclasses.replace(rollout, previous_removed=True)
    await _patch_status(api, ctx, {"rollout": retired.as_status()})
    return retired


async def _unreachable(api: KubeApi, ctx: CacheContext, rollout: Rollout, what: str, exc: BaseException) -> NoReturn:
    message = (f"revision {rollout.revision} serves; waiting for {what} to announce it and invalidate "
               f"revision {rollout.previous}: {type(exc).__name__}: {exc}")
    waiting = dataclasses.replace(rollout, reason="BackendUnavailable", message=message)
    await _patch_status(api, ctx, {"rollout": waiting.as_status()})
    raise kopf.TemporaryError(message, delay=RETRY_DELAY_SECONDS) from exc


async def _patch_status(api: KubeApi, ctx: CacheContext, patch: dict[str, Any]) -> None:
    await api.patch(LLMCACHES, ctx.namespace, ctx.name, {"status": patch}, subresource="status")


async def redis_password(api: KubeApi, ctx: CacheContext) -> str | None:
    """The Redis password from its Secret (generated for a managed Redis, ``redis.passwordSecret``
    for an external one); None without one, or while the Secret or its key is missing."""
    if ctx.redis_password_secret is None:
        return None
    secret_name, key = ctx.redis_password_secret
    secret = await api.get(SECRETS, ctx.namespace, secret_name)
    encoded = ((secret or {}).get("data") or {}).get(key)
    return base64.b64decode(encoded).decode() if encoded else None
