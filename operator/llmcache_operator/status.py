"""``status`` of an LLMCache from what its children report (pure functions, no I/O).

Readiness comes from the workloads' own status (``readyReplicas`` of the StatefulSets and of
the active revision's Deployment), never from the mere existence of an object.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .context import CacheContext

READY = "Ready"
COMPONENT_CONDITIONS = ("RedisReady", "MilvusReady", "VLLMReady")
#: The status fields this module owns (others, e.g. ``stats`` or ``invalidations``, are left alone).
OWNED_FIELDS = ("phase", "conditions", "endpoints", "activeRevision", "observedGeneration")
#: A condition message stays readable, whatever text a refused spec quoted.
MAX_MESSAGE_CHARS = 2048


@dataclass(frozen=True)
class ComponentState:
    ready: bool
    reason: str
    message: str


EXTERNAL = ComponentState(True, "External", "provided outside the cluster; not managed by the operator")


def workload_state(kind: str, name: str, obj: Mapping[str, Any] | None) -> ComponentState:
    """Readiness of a Deployment or StatefulSet from its status."""
    if obj is None:
        return ComponentState(False, "Missing", f"{kind} {name} does not exist yet")
    wanted = obj.get("spec", {}).get("replicas", 1)
    status = obj.get("status") or {}
    ready = status.get("readyReplicas") or 0
    generation = obj.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return ComponentState(False, "Progressing", f"{kind} {name} has not yet acted on its latest spec")
    updated = status.get("updatedReplicas")
    if updated is not None and updated < wanted:
        return ComponentState(False, "Progressing", f"{kind} {name}: {updated}/{wanted} replicas updated")
    if ready >= wanted:
        return ComponentState(True, "Ready", f"{kind} {name}: {ready}/{wanted} replicas ready")
    return ComponentState(False, "NotReady", f"{kind} {name}: {ready}/{wanted} replicas ready")


def redact(url: str) -> str:
    """``url`` without a password, for the status (anyone who can read the LLMCache sees it)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    hosts = parts.netloc.rpartition("@")[2]  # as written: a redis+cluster:// URL lists several host:port
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{hosts}"))


def endpoints(ctx: CacheContext) -> dict[str, str]:
    return {"redis": redact(ctx.redis_url), "milvus": redact(ctx.milvus_uri), "vllm": redact(ctx.vllm_url)}


def _condition(
    type_: str, ok: bool, reason: str, message: str, previous: Sequence[Mapping[str, Any]], now: str,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = next((cond for cond in previous if cond.get("type") == type_), None)
    since = before.get("lastTransitionTime", now) if before and before.get("status") == status else now
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since}


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def healthy_status(
    previous: Mapping[str, Any],
    ctx: CacheContext,
    components: Mapping[str, ComponentState],
    active_revision: str,
    observed_generation: int | None,
    now: str,
) -> dict[str, Any]:
    """The owned status fields for a valid spec; ``components`` maps condition type to state."""
    old_conditions = previous.get("conditions") or []
    conditions = [
        _condition(type_, state.ready, state.reason, state.message, old_conditions, now)
        for type_, state in components.items()
    ]
    waiting = [type_ for type_, state in components.items() if not state.ready]
    if waiting:
        phase = "Degraded" if previous.get("phase") in ("Ready", "Degraded") else "Provisioning"
        ready = _condition(READY, False, phase, f"waiting for {', '.join(waiting)}", old_conditions, now)
    else:
        phase = "Ready"
        ready = _condition(READY, True, "AllComponentsReady", "every component is ready", old_conditions, now)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [ready, *conditions],
        "endpoints": endpoints(ctx),
        "activeRevision": active_revision,
    }
    status["observedGeneration"] = _generation(previous, observed_generation)
    return status


def failed_status(
    previous: Mapping[str, Any], message: str, observed_generation: int | None, now: str,
) -> dict[str, Any]:
    """The owned status fields for a spec that cannot be provisioned: ``message`` says why."""
    old_conditions = previous.get("conditions") or []
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    ready = _condition(READY, False, "InvalidSpec", message, old_conditions, now)
    others = [cond for cond in old_conditions if cond.get("type") != READY]
    status = {key: previous[key] for key in ("endpoints", "activeRevision") if key in previous}
    status.update({"phase": "Failed", "conditions": [ready, *others]})
    status["observedGeneration"] = _generation(previous, observed_generation)
    return status


def _generation(previous: Mapping[str, Any], observed_generation: int | None) -> int | None:
    return observed_generation if observed_generation is not None else previous.get("observedGeneration")


def owned(status: Mapping[str, Any]) -> dict[str, Any]:
    return {key: status[key] for key in OWNED_FIELDS if status.get(key) is not None}
