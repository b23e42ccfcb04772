"""kopf handlers: thin, typed, delegating to the pure builders and to :mod:`apply`.

- create / update / resume: validate everything, plan, write, publish status.
- child events (the Deployments and StatefulSets this operator labelled): converge the owner
  again, so a deleted child comes back and readiness is reported as soon as a workload changes.
- a timer: copy the shared Redis counters into ``status.stats``.
- a timer while a model revision rolls out: its deadline, and retries of the switch
  (:mod:`rollout` decides, :mod:`switchover` acts).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from . import apply, names, rollout, switchover
from . import status as cache_status
from .children import cache_context, desired_state
from .context import CacheContext
from .kube import DEPLOYMENTS, LLMCACHES, STATEFULSETS, KubeApi, KubeError
from .runtime import Runtime
from .spec import SpecError
from .stats import read_stats

RETRY_DELAY_SECONDS = 10
#: The API server refusing a child as invalid: the same manifest would be refused again, so it is a
#: spec problem (``phase: Failed``, fixed by editing the spec), not something to retry.
REFUSED_AS_INVALID = frozenset({400, 422})


async def login(settings: kopf.OperatorSettings, memo: Runtime, **_: Any) -> kopf.ConnectionInfo:
    """In-cluster service account first, then ``KUBECONFIG`` / ``~/.kube/config``."""
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no service account token and no kubeconfig (set KUBECONFIG)")
    await memo.api.login(info)
    return info


async def close_api(memo: Runtime, **_: Any) -> None:
    await memo.api.close()


async def reconcile(body: kopf.Body, meta: kopf.Meta, memo: Runtime, logger: logging.Logger, **_: Any) -> None:
    try:
        await converge(memo, body, logger, observed_generation=meta.get("generation"))
        await warn_if_redis_password_missing(memo, body)
    except SpecError as exc:
        kopf.warn(body, reason="InvalidSpec", message=f"{exc}")
        logger.error(f"invalid spec, nothing changed: {exc}")
    except KubeError as exc:
        raise kopf.TemporaryError(f"{exc}", delay=RETRY_DELAY_SECONDS) from exc


async def warn_if_redis_password_missing(memo: Runtime, body: kopf.Body) -> None:
    """An external Redis's ``passwordSecret`` (or its key) missing: the sidecars start without the
    password (the reference is optional, so the app's pods never wait for it) and Redis refuses
    them; say so once per spec change, while the cache itself still works (it passes through)."""
    ctx = cache_context(body["metadata"]["name"], body["metadata"]["namespace"], body.get("spec", {}), memo.config)
    ref = ctx.spec.redis.password_secret
    if ref is not None and await switchover.redis_password(memo.api, ctx) is None:
        kopf.warn(body, reason="RedisPasswordSecretMissing", message=(
            f"Secret {ref.name} with key {ref.key} (spec.redis.passwordSecret) does not exist in {ctx.namespace}: "
            "the sidecars reach Redis without a password until it does (restart them once it exists)"))


async def child_changed(labels: Mapping[str, str], namespace: str, memo: Runtime, logger: logging.Logger, **_: Any) -> None:
    """A child changed (or vanished): recreate what is missing, and publish the new readiness."""
    cache = labels.get(names.CACHE_LABEL)
    if not cache:
        return
    body = await memo.api.get(LLMCACHES, namespace, cache)
    if body is None or body.get("metadata", {}).get("deletionTimestamp"):
        return
    try:
        await converge(memo, body, logger)
    except SpecError:
        pass  # the status says Failed; the Event was posted when the spec was set
    except KubeError as exc:
        logger.warning(f"children of {cache} not converged: {exc}")


async def converge(
    memo: Runtime, body: Mapping[str, Any], logger: logging.Logger, observed_generation: int | None = None,
) -> None:
    """Bring the children and the status of ``body`` in line with its spec, one handler at a time
    per LLMCache (a rollout's switch must never run twice at once).  A rollout that commits
    converges once more: the Service and the sidecar ConfigMap switch to the new revision."""
    meta = body.get("metadata", {})
    async with memo.lock_for(meta["namespace"], meta["name"]):
        while await _converge_once(memo, body, logger, observed_generation):
            pass


async def _converge_once(
    memo: Runtime, body: Mapping[str, Any], logger: logging.Logger, observed_generation: int | None,
) -> bool:
    """One pass of :func:`converge`; True to run another.

    Everything is validated and planned before the first write; a :class:`SpecError` is
    published as ``phase: Failed`` and re-raised, with nothing written.  A child the API server
    refuses as invalid (400, 422: e.g. an image name with spaces) ends the same way, after the
    writes before it.
    """
    api = memo.api
    meta = body.get("metadata", {})
    try:
        ctx = cache_context(meta["name"], meta["namespace"], body.get("spec", {}), memo.config)
        plan = await switchover.current_plan(api, ctx)
        desired = desired_state(ctx, active_revision=plan.active, serving_revisions=plan.serving)
        owner = kopf.Body(dict(body))
        kopf.adopt(desired.manifests, owner=owner)
        writes = await apply.plan(api, ctx, desired, owner=owner)
    except SpecError as exc:
        await publish_status(api, body, failed=str(exc), observed_generation=observed_generation)
        raise
    try:
        await apply.execute(api, ctx.namespace, writes)
    except KubeError as exc:
        if exc.status not in REFUSED_AS_INVALID:
            raise
        message = f"the API server refused a child built from this spec ({exc}); fix the spec"
        await publish_status(api, body, failed=message, observed_generation=observed_generation)
        raise SpecError(message) from exc
    for write in writes:
        logger.info(f"{write.verb} {write.resource.kind} {write.name}")
    try:
        advanced = await switchover.advance(api, ctx, plan, memo.config, logger)
    except kopf.TemporaryError:  # the switch waits for Redis or Milvus: the status says so meanwhile
        await publish_status(api, body, ctx=ctx, active_revision=plan.active, observed_generation=observed_generation)
        raise
    await publish_status(api, body, ctx=ctx, active_revision=advanced.active, observed_generation=observed_generation)
    return advanced.replan


async def publish_status(
    api: KubeApi,
    body: Mapping[str, Any],
    *,
    ctx: CacheContext | None = None,
    active_revision: str = "",
    failed: str | None = None,
    observed_generation: int | None = None,
) -> None:
    """Compute the status from the children and patch only what changed (nothing if nothing did).

    The diff is taken against a fresh read: a child-event refresh may have written in between.
    """
    metadata = body.get("metadata", {})
    fresh = await api.get(LLMCACHES, metadata["namespace"], metadata["name"])
    if fresh is None:
        return
    previous = dict(fresh.get("status") or {})
    now = cache_status.now_rfc3339()
    if ctx is None:
        new = cache_status.failed_status(previous, failed or "invalid spec", observed_generation, now)
    else:
        components = await observe(api, ctx, active_revision)
        new = cache_status.healthy_status(previous, ctx, components, active_revision, observed_generation, now)
    new = rollout.decorate_status(cache_status.owned(new), previous, now)
    patch = apply.merge_diff(cache_status.owned(previous), cache_status.owned(new))
    if patch:
        await api.patch(LLMCACHES, metadata["namespace"], metadata["name"], {"status": patch}, subresource="status")


async def observe(api: KubeApi, ctx: CacheContext, active_revision: str) -> dict[str, cache_status.ComponentState]:
    """The readiness of each component, read from the live workloads."""
    async def workload(res: Any, name: str) -> cache_status.ComponentState:
        return cache_status.workload_state(res.kind, name, await api.get(res, ctx.namespace, name))

    spec = ctx.spec
    return {
        "RedisReady": cache_status.EXTERNAL if spec.redis.mode == "external"
        else await workload(STATEFULSETS, names.redis_name(ctx.name)),
        "MilvusReady": cache_status.EXTERNAL if spec.milvus.mode == "external"
        else await workload(STATEFULSETS, names.milvus_name(ctx.name)),
        "VLLMReady": cache_status.EXTERNAL if spec.vllm.is_external
        else await workload(DEPLOYMENTS, names.vllm_deployment_name(ctx.name, active_revision)),
    }


async def refresh_stats(
    name: str, namespace: str, body: kopf.Body, status: kopf.Status, patch: kopf.Patch,
    memo: Runtime, logger: logging.Logger, **_: Any,
) -> None:
    """Best effort: an unreachable Redis leaves the previous numbers (and never fails)."""
    try:
        # the raw spec, not kopf's Spec view: that one fails to iterate a spec that is not an object
        ctx = cache_context(name, namespace, body.get("spec"), memo.config)
    except SpecError:
        return
    try:
        password = await switchover.redis_password(memo.api, ctx)
    except KubeError as exc:
        logger.debug(f"stats not refreshed: {exc}")
        return
    stats = await read_stats(ctx.redis_url, password, names.stats_key(name), logger)
    if stats is not None and stats != status.get("stats"):
        patch.status["stats"] = stats


async def rollout_tick(body: kopf.Body, status: kopf.Status, memo: Runtime, logger: logging.Logger, **_: Any) -> None:
    """While a rollout runs: notice its deadline, and retry a switch that Redis or Milvus refused."""
    if not status.get("rollout"):
        return
    try:
        await converge(memo, body, logger)
    except SpecError:
        pass  # published as phase Failed
    except KubeError as exc:
        raise kopf.TemporaryError(f"{exc}", delay=RETRY_DELAY_SECONDS) from exc


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Add this module's handlers to ``registry`` (see ``__main__.HANDLER_MODULES``)."""
    resource = (names.GROUP, names.VERSION, names.PLURAL)
    kopf.on.login(registry=registry)(login)
    kopf.on.cleanup(registry=registry)(close_api)
    kopf.on.create(*resource, registry=registry)(reconcile)
    kopf.on.update(*resource, registry=registry)(reconcile)
    kopf.on.resume(*resource, registry=registry)(reconcile)
    children = {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.CACHE_LABEL: kopf.PRESENT}
    for plural in ("deployments", "statefulsets"):
        kopf.on.event("apps", "v1", plural, labels=children, registry=registry)(child_changed)
    kopf.timer(*resource, interval=runtime.config.stats_interval_seconds, registry=registry)(refresh_stats)
    kopf.timer(*resource, interval=runtime.config.rollout_check_seconds, registry=registry)(rollout_tick)
