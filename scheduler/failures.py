"""How a rollout fails, pure: the failure budget, the gates that fail it (an alarm, the
progress deadline), and the failure action (`revert` or `hold`).

`budget_rule` says the budget's rule in words, exactly as `count_failures` and the
planner apply it; `flotilla service show` prints it and docs/scheduler.md repeats it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.operations.rules import revert_target
from flotilla.engine.records import (
    FailureAction,
    HistoryEntry,
    RolloutPolicy,
    RolloutState,
    RolloutStatus,
    Service,
)
from flotilla.scheduler.gates import Readings, deadline_of, deadline_reason, firing
from flotilla.scheduler.phases import FAILED_OUTCOMES
from flotilla.scheduler.steps import begin_rollout, plan_steps, step_words

MAX_REASON = 500  # characters of a reason kept in the history


def budget_rule(policy: RolloutPolicy) -> str:
    """The failure budget's rule, exactly as `plan_service` applies it, for people."""
    budget = max(1, policy.max_failures)
    zero = " (max_failures 0 counts as 1)" if policy.max_failures == 0 else ""
    return (
        f"the rollout fails when the failed deploys of one revision reach {budget}{zero} "
        "(count >= max_failures): deploys of a weighted revision created since the rollout "
        "began (or was resumed after a hold) that ended rolled_back or failed; deploys still "
        f"in flight do not count; then: {policy.failure_action.value}"
    )


def count_failures(
    deploys: Iterable[DeployCheckpoint], state: RolloutState, weights: Mapping[str, int]
) -> dict[str, int]:
    counts: dict[str, int] = {}
    since = state.resumed_at or state.started_at
    if since is None:
        return counts
    for deploy in deploys:
        if (
            deploy.outcome in FAILED_OUTCOMES
            and deploy.created_at >= since
            and deploy.to_revision is not None  # an unassignment spends no revision
            and weights.get(deploy.to_revision, 0) > 0
        ):
            counts[deploy.to_revision] = counts.get(deploy.to_revision, 0) + 1
    return dict(sorted(counts.items()))


def stop_reason(
    spent: Sequence[str], state: RolloutState, budget: int, deploys: Iterable[DeployCheckpoint]
) -> str:
    parts = [f"{state.failures[r]} deploy(s) of revision {r[:12]} failed" for r in spent]
    failed = [d for d in deploys if d.to_revision in spent and d.outcome in FAILED_OUTCOMES]
    last = max(failed, key=lambda d: (d.updated_at, d.id), default=None)
    reason = f"{'; '.join(parts)} (max_failures {budget})"
    if last is not None and last.error:
        reason += f"; last on {last.instance_id}: {last.error}"
    return reason[:MAX_REASON]


def gate_failure(
    service: Service,
    state: RolloutState,
    readings: Readings,
    deploys: Mapping[str, DeployCheckpoint],
    deploying: Sequence[str],
    now: datetime,
) -> str | None:
    """An alarm in ALARM, or the progress deadline passed: why the rollout fails, if it does."""
    policy = service.rollout
    ringing = firing(policy, readings)
    if ringing:
        steps = plan_steps(policy, state)
        where = step_words(steps, min(state.step, len(steps) - 1))
        doing = "baking" if state.baking_since is not None else "rolling"
        return f"alarm {', '.join(ringing)} in ALARM during {where}, {doing}"
    deadline = deadline_of(policy, state, deploys.values(), service.history)
    if deadline is not None and deploying and now > deadline:
        since = deadline - timedelta(seconds=policy.progress_deadline_seconds)
        return deadline_reason(policy, since, deploying)
    return None


def fail(
    service: Service, state: RolloutState, weights: dict[str, int], reason: str, now: datetime
) -> tuple[dict[str, int], RolloutState, bool, list[HistoryEntry]]:
    """The failure action: (weights, state, hold, history entries)."""
    entries = [HistoryEntry(now, "rollout_stopped", reason, weights)]
    if service.rollout.failure_action is FailureAction.HOLD:
        why = (
            f"held: {service.name} is paused with what runs ({reason}); `flotilla rollout resume "
            f"{service.name}` carries on, `flotilla rollout revert {service.name}` goes back"
        )
        entries.append(HistoryEntry(now, "held", why[:MAX_REASON], weights))
        return (
            weights,
            dataclasses.replace(state, status=RolloutStatus.HELD, reason=reason),
            True,
            entries,
        )
    target = revert_target(state, weights)
    if isinstance(target, dict):
        entries.append(
            HistoryEntry(now, "reverted", f"restored the last good weights: {reason}", target)
        )
        state = begin_rollout(state, target, now, fast=True, promoted=state.promoted)
        return target, state, False, entries
    reason += f"; not reverted: {target.value}"
    return (
        weights,
        dataclasses.replace(state, status=RolloutStatus.STOPPED, reason=reason),
        False,
        entries,
    )
