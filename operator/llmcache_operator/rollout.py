"""Model revision rollouts, as pure decisions (no I/O): which revisions run, which one serves,
and what to do next.  :mod:`switchover` carries them out.

The rollout's state lives in ``status.rollout`` (so an operator restart resumes it)::

    {revision: <new>, previous: <serving>, startedAt: <time>, phase: Waiting|Switching|Failed,
     reason: ..., message: ..., previousRemoved: <bool>}

- ``Waiting``: the new revision's Deployment runs beside the old one; the Service, the sidecar
  ConfigMap and ``status.activeRevision`` still name the old revision.  When the new Deployment
  is Ready, the rollout commits (``Switching``); if it fails (its Deployment reports
  ``ProgressDeadlineExceeded`` or ``ReplicaFailure``, or the operator's deadline passes) it stays
  ``Failed``: the old revision keeps serving, and the ``RolloutComplete`` condition says why.
- ``Switching``: committed.  The Service and the ConfigMap name the new revision; the switch
  (active-revision key and event, old Deployment removed, invalidation, ``status.invalidations``)
  is repeated until it has completed once, which clears ``status.rollout``.  Once the old
  Deployment is removed (``previousRemoved``) it stays removed, even while Redis or Milvus keep
  the rest of the switch waiting.

With an external vLLM there is nothing to wait for: a revision bump commits at once.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .status import _condition, workload_state

WAITING, SWITCHING, FAILED = "Waiting", "Switching", "Failed"
CONDITION = "RolloutComplete"
#: ``status.invalidations`` keeps this many records, the newest last
MAX_INVALIDATIONS = 10

Phase = Literal["Waiting", "Switching", "Failed"]


@dataclass(frozen=True)
class Rollout:
    revision: str
    previous: str
    started_at: str
    phase: Phase = WAITING
    reason: str = "Waiting"
    message: str = ""
    #: the previous revision's Deployment is gone (a switch deletes it before invalidating)
    previous_removed: bool = False

    def as_status(self) -> dict[str, Any]:
        return {"revision": self.revision, "previous": self.previous, "startedAt": self.started_at,
                "phase": self.phase, "reason": self.reason, "message": self.message,
                "previousRemoved": self.previous_removed}

    @classmethod
    def from_status(cls, raw: Any) -> Rollout | None:
        if not isinstance(raw, Mapping):
            return None
        revision, previous, phase = raw.get("revision"), raw.get("previous"), raw.get("phase")
        if not isinstance(revision, str) or not isinstance(previous, str) or phase not in (WAITING, SWITCHING, FAILED):
            return None
        return cls(revision, previous, str(raw.get("startedAt") or ""), phase,
                   str(raw.get("reason") or phase), str(raw.get("message") or ""), raw.get("previousRemoved") is True)


@dataclass(frozen=True)
class RevisionPlan:
    """What the children should look like now."""

    #: the revision the Service selects and the sidecar ConfigMap names
    active: str
    #: the revisions that keep a vLLM Deployment
    serving: frozenset[str]
    rollout: Rollout | None
    #: ``status.rollout`` names a rollout nobody wants any more (the spec went back): clear it
    abandoned: bool = False
    #: the cache has no active revision yet (just created): record it in the active-revision key
    first: bool = False


def plan_revisions(spec_revision: str, status: Mapping[str, Any], *, external: bool, now: str) -> RevisionPlan:
    """The plan for ``spec.model.revision`` given the current status."""
    current = Rollout.from_status(status.get("rollout"))
    if current is not None and current.phase == SWITCHING:
        # committed: finish this switch first (a newer spec revision rolls out after it)
        running = {current.revision} if current.previous_removed else {current.previous, current.revision}
        return RevisionPlan(current.revision, _serving(running, external), current)
    active = status.get("activeRevision") or spec_revision
    if active == spec_revision:
        return RevisionPlan(active, _serving({active}, external), None, abandoned=current is not None,
                            first=not status.get("activeRevision"))
    if external:
        rollout = Rollout(spec_revision, active, now, SWITCHING, "Switching", "external vLLM: switching at once")
        return RevisionPlan(spec_revision, frozenset(), rollout)
    if current is not None and current.revision == spec_revision and current.previous == active:
        rollout = current
    else:
        rollout = Rollout(spec_revision, active, now, WAITING, "Waiting",
                          f"starting revision {spec_revision}; {active} serves meanwhile")
    return RevisionPlan(active, frozenset({active, spec_revision}), rollout)


def _serving(revisions: set[str], external: bool) -> frozenset[str]:
    return frozenset() if external else frozenset(revisions)


@dataclass(frozen=True)
class DeploymentHealth:
    ready: bool
    #: why the revision will not become ready (None while it still may)
    failure: str | None
    detail: str


def deployment_health(deployment: Mapping[str, Any] | None) -> DeploymentHealth:
    """Readiness of the new revision's Deployment from its status, or why it failed."""
    name = (deployment or {}).get("metadata", {}).get("name", "the new Deployment")
    state = workload_state("Deployment", name, deployment)
    if state.ready:
        return DeploymentHealth(True, None, state.message)
    for condition in ((deployment or {}).get("status") or {}).get("conditions") or []:
        kind, status, reason = condition.get("type"), condition.get("status"), condition.get("reason", "")
        if kind == "Progressing" and status == "False" and reason == "ProgressDeadlineExceeded":
            return DeploymentHealth(False, "ProgressDeadlineExceeded",
                                    f"Deployment {name}: {condition.get('message') or reason}")
        if kind == "ReplicaFailure" and status == "True":
            return DeploymentHealth(False, "ReplicaFailure", f"Deployment {name}: {condition.get('message') or reason}")
    return DeploymentHealth(False, None, state.message)


@dataclass(frozen=True)
class Step:
    """What to do with a plan: ``wait``, ``switch``, ``fail``, or ``none`` (no rollout)."""

    action: Literal["none", "wait", "switch", "fail"]
    rollout: Rollout | None


def next_step(plan: RevisionPlan, new_deployment: Mapping[str, Any] | None, *, now: str,
              deadline_seconds: float) -> Step:
    rollout = plan.rollout
    if rollout is None:
        return Step("none", None)
    if rollout.phase == SWITCHING:
        return Step("switch", rollout)
    health = deployment_health(new_deployment)
    if health.ready:
        return Step("switch", _with(rollout, SWITCHING, "Switching", f"revision {rollout.revision} is ready: switching"))
    if health.failure is not None:
        return Step("fail", _with(rollout, FAILED, health.failure,
                                  f"revision {rollout.revision} failed ({health.detail}); {rollout.previous} still serves"))
    if _elapsed(rollout.started_at, now) > deadline_seconds:
        return Step("fail", _with(rollout, FAILED, "DeadlineExceeded",
                                  f"revision {rollout.revision} not ready after {deadline_seconds:.0f}s "
                                  f"({health.detail}); {rollout.previous} still serves"))
    message = f"waiting for revision {rollout.revision} ({health.detail}); {rollout.previous} serves meanwhile"
    return Step("wait", _with(rollout, WAITING, "Waiting", message))


def _with(rollout: Rollout, phase: Phase, reason: str, message: str) -> Rollout:
    return dataclasses.replace(rollout, phase=phase, reason=reason, message=message)


def _elapsed(since: str, now: str) -> float:
    try:
        return (_parse(now) - _parse(since)).total_seconds()
    except ValueError:
        return 0.0


def _parse(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def invalidation_record(revision: str, exact: int, semantic: int, at: str) -> dict[str, Any]:
    return {"revision": revision, "exactEntries": exact, "semanticEntries": semantic, "at": at}


def with_invalidation(history: Sequence[Mapping[str, Any]] | None, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``status.invalidations`` with ``record`` appended, the last :data:`MAX_INVALIDATIONS` kept."""
    return [*(dict(item) for item in history or []), dict(record)][-MAX_INVALIDATIONS:]


def decorate_status(owned: Mapping[str, Any], previous: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The owned status fields with the rollout's phase and ``RolloutComplete`` condition.

    ``previous`` is the live status (``rollout`` and ``invalidations`` are read from it).
    """
    result = dict(owned)
    if result.get("phase") == "Failed" or "conditions" not in result:
        return result
    old_conditions = previous.get("conditions") or []
    rollout = Rollout.from_status(previous.get("rollout"))
    if rollout is None:
        last = (previous.get("invalidations") or [None])[-1]
        active = result.get("activeRevision", "")
        message = f"revision {active} is active"
        if isinstance(last, Mapping):
            message += (f"; {last.get('exactEntries', 0)} exact and {last.get('semanticEntries', 0)} semantic "
                        f"entries of revision {last.get('revision')} invalidated at {last.get('at')}")
        condition = _condition(CONDITION, True, "RevisionActive", message, old_conditions, now)
    else:
        condition = _condition(CONDITION, False, rollout.reason, rollout.message, old_conditions, now)
        result["phase"] = "Degraded" if rollout.phase == FAILED else "RollingOut"
    result["conditions"] = [*(c for c in result["conditions"] if c.get("type") != CONDITION), condition]
    return result
