"""The pure rollout decisions (``llmcache_operator.rollout``): what runs, what serves, what next."""

from __future__ import annotations

from typing import Any

import pytest

from llmcache_operator.rollout import (
    MAX_INVALIDATIONS,
    Rollout,
    decorate_status,
    deployment_health,
    invalidation_record,
    next_step,
    plan_revisions,
    with_invalidation,
)

T0, T1, LATE = "2026-01-01T00:00:00Z", "2026-01-01T00:00:30Z", "2026-01-01T02:00:00Z"


def ready(replicas: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": "d", "generation": 1}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": 1, "readyReplicas": replicas, "updatedReplicas": replicas}}


def starting(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "d", "generation": 1}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "readyReplicas": 0, "conditions": list(conditions)}}


def test_a_new_cache_serves_its_revision() -> None:
    plan = plan_revisions("a", {}, external=False, now=T0)
    assert (plan.active, plan.serving, plan.rollout) == ("a", frozenset({"a"}), None)


def test_a_bump_runs_both_and_serves_the_old_until_the_new_is_ready() -> None:
    plan = plan_revisions("b", {"activeRevision": "a"}, external=False, now=T0)
    assert (plan.active, plan.serving) == ("a", frozenset({"a", "b"}))
    assert plan.rollout is not None and (plan.rollout.phase, plan.rollout.started_at) == ("Waiting", T0)
    later = plan_revisions("b", {"activeRevision": "a", "rollout": plan.rollout.as_status()}, external=False, now=T1)
    assert later.rollout is not None and later.rollout.started_at == T0, "the deadline counts from the start"


def test_a_committed_switch_finishes_before_a_newer_revision_starts() -> None:
    switching = Rollout("b", "a", T0, "Switching").as_status()
    plan = plan_revisions("c", {"activeRevision": "a", "rollout": switching}, external=False, now=T1)
    assert (plan.active, plan.serving) == ("b", frozenset({"a", "b"}))
    removed = {**switching, "previousRemoved": True}
    assert plan_revisions("c", {"activeRevision": "b", "rollout": removed}, external=False, now=T1).serving == {"b"}


def test_a_bump_while_waiting_replaces_the_waiting_revision() -> None:
    waiting = Rollout("b", "a", T0).as_status()
    plan = plan_revisions("c", {"activeRevision": "a", "rollout": waiting}, external=False, now=T1)
    assert plan.serving == {"a", "c"} and plan.rollout is not None and plan.rollout.started_at == T1


def test_going_back_abandons_the_rollout() -> None:
    failed = Rollout("b", "a", T0, "Failed").as_status()
    plan = plan_revisions("a", {"activeRevision": "a", "rollout": failed}, external=False, now=T1)
    assert (plan.serving, plan.rollout, plan.abandoned) == (frozenset({"a"}), None, True)


def test_an_external_vllm_switches_at_once() -> None:
    plan = plan_revisions("b", {"activeRevision": "a"}, external=True, now=T0)
    assert (plan.active, plan.serving) == ("b", frozenset())
    assert next_step(plan, None, now=T0, deadline_seconds=60).action == "switch"


@pytest.mark.parametrize(("deployment", "now", "action", "reason"), [
    (ready(), T1, "switch", "Switching"),
    (starting(), T1, "wait", "Waiting"),
    (None, T1, "wait", "Waiting"),
    (starting({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "slow"}),
     T1, "fail", "ProgressDeadlineExceeded"),
    (starting({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "quota"}),
     T1, "fail", "ReplicaFailure"),
    (starting(), LATE, "fail", "DeadlineExceeded"),
    (ready(), LATE, "switch", "Switching"),
])
def test_the_next_step_of_a_waiting_rollout(deployment: Any, now: str, action: str, reason: str) -> None:
    plan = plan_revisions("b", {"activeRevision": "a"}, external=False, now=T0)
    step = next_step(plan, deployment, now=now, deadline_seconds=3600)
    assert step.action == action and step.rollout is not None and step.rollout.reason == reason
    if action == "fail":
        assert "a still serves" in step.rollout.message


def test_deployment_health_needs_every_replica() -> None:
    half = ready(2)
    half["status"]["readyReplicas"] = 1
    assert not deployment_health(half).ready and deployment_health(ready(2)).ready


def base(phase: str = "Ready") -> dict[str, Any]:
    return {"phase": phase, "activeRevision": "a",
            "conditions": [{"type": "Ready", "status": "True", "reason": "r", "message": "m"}]}


def rolled(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "RolloutComplete")


def test_the_status_during_and_after_a_rollout() -> None:
    waiting = decorate_status(base(), {"rollout": Rollout("b", "a", T0, message="waiting for b").as_status()}, T1)
    assert waiting["phase"] == "RollingOut" and rolled(waiting)["message"] == "waiting for b"
    failed = decorate_status(base(), {"rollout": Rollout("b", "a", T0, "Failed", "DeadlineExceeded").as_status()}, T1)
    assert failed["phase"] == "Degraded" and rolled(failed)["reason"] == "DeadlineExceeded"
    done = decorate_status(base(), {"invalidations": [invalidation_record("z", 5, 2, T0)]}, T1)
    assert done["phase"] == "Ready" and rolled(done)["status"] == "True"
    assert "5 exact and 2 semantic entries of revision z" in rolled(done)["message"]
    invalid = decorate_status({"phase": "Failed", "conditions": []}, {"rollout": Rollout("b", "a", T0).as_status()}, T1)
    assert invalid["phase"] == "Failed", "an invalid spec says so first"


def test_invalidation_history_keeps_the_newest() -> None:
    history: list[dict[str, Any]] = []
    for index in range(MAX_INVALIDATIONS + 3):
        history = with_invalidation(history, invalidation_record(f"r{index}", index, 0, T0))
    assert len(history) == MAX_INVALIDATIONS and history[-1]["revision"] == f"r{MAX_INVALIDATIONS + 2}"


def test_only_a_new_cache_records_its_first_revision() -> None:
    assert plan_revisions("a", {}, external=False, now=T0).first
    assert not plan_revisions("a", {"activeRevision": "a"}, external=False, now=T0).first
