"""Plan one service's rollout step, pure: which assignments to write and what to record.

`plan_service` turns what a pass read about a service (the record, its instances, the
deploys that matter) into a `ServicePlan`. It does no I/O and reads no clock, so every
rule below is unit-tested without a store:

- **A rollout** begins whenever the weights differ from the ones in the rollout state.
  A rollout that reaches its weights on every live instance completes; if it did so
  without a single failed deploy, its weights become `previous_weights`, the revert target.
- **In flight** is an instance with an unfinished deploy, or whose assignment differs from
  the revision it runs while the deploy of that assignment has not failed (pending or
  running). An instance whose deploy of its assignment failed runs its old revision again
  and holds no slot: it is *failed*, and it is not retried within the same rollout (a new
  rollout gives it a fresh attempt).
- **Pacing**: a move that makes an instance deploy (a new revision that it does not run)
  takes one of the policy's `max_in_flight` slots; moves that need no deploy (back to the
  revision it runs, to no revision, or of an instance already in flight) are free. Moves
  that find no slot wait for a later pass.
- **Failure budget**: deploys of a weighted revision created since the rollout began that
  ended `rolled_back` or `failed` are counted per revision. When one reaches
  `max_failures` (0 counts as 1) the rollout stops: nothing more moves to it. With
  `auto_revert` and known previous weights, those are restored instead and a new rollout
  towards them begins (the rule is `engine.operations.rules.revert_target`, the one
  `flotilla rollout revert` follows). Either way the service history says why.
- **Paused** services are left exactly as they are: no assignment and no record changes.
- **Dead** instances lose their assignment (they are not counted by the apportionment).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.liveness import is_alive
from flotilla.engine.operations.rules import bounded_history, revert_target
from flotilla.engine.records import (
    HistoryEntry,
    Instance,
    RolloutState,
    RolloutStatus,
    Service,
    deploy_id_for,
)
from flotilla.scheduler.apportion import assign

FAILED_OUTCOMES = frozenset({Outcome.ROLLED_BACK, Outcome.FAILED})
MAX_REASON = 500  # characters of a reason kept in the history


class Phase(StrEnum):
    SETTLED = "settled"  # runs its assignment, or has none
    IN_FLIGHT = "in_flight"  # its deploy is pending or running
    FAILED = "failed"  # the deploy of its assignment failed; it runs its old revision


@dataclass(frozen=True)
class Assignment:
    """One conditional assignment write."""

    instance_id: str
    revision: str | None
    expected_version: int


@dataclass(frozen=True)
class ServiceInputs:
    """What a pass read about one service."""

    service: Service
    live: Sequence[Instance]
    dead: Sequence[Instance]
    deploys: Mapping[str, DeployCheckpoint]  # by deploy id
    now: datetime


@dataclass(frozen=True)
class ServicePlan:
    """What to write for one service; `updated` is None when the record stays as it is."""

    service: Service  # the record the plan was made on
    updated: Service | None
    new_history: tuple[HistoryEntry, ...]
    assignments: tuple[Assignment, ...]
    in_flight: int
    slots: int
    waiting: int  # moves held back by pacing or by a stopped rollout
    # Dead instances whose assignment this plan clears: they leave the service.
    leaving: frozenset[str] = frozenset()

    @property
    def writes_nothing(self) -> bool:
        return self.updated is None and not self.assignments


def split_live(
    instances: Iterable[Instance], now: datetime, ttl: timedelta
) -> tuple[list[Instance], list[Instance]]:
    live: list[Instance] = []
    dead: list[Instance] = []
    for instance in instances:
        (live if is_alive(instance, now, ttl) else dead).append(instance)
    return live, dead


def unsettled(instance: Instance) -> bool:
    """Assigned a revision it does not run (yet, or any more)."""
    return instance.assigned_revision not in (None, instance.current_revision)


def needs_deploy_list(service: Service) -> bool:
    """Whether a pass must list the service's recent deploys (only during a rollout)."""
    return service.rollout_state.status is not RolloutStatus.COMPLETE


def deploy_window(service: Service) -> datetime | None:
    state = service.rollout_state
    return state.watch_since or state.started_at


def running_deploys(deploys: Iterable[DeployCheckpoint]) -> set[str]:
    """Ids of the instances with an unfinished deploy."""
    return {d.instance_id for d in deploys if not d.finished}


def phase_of(
    instance: Instance, deploys: Mapping[str, DeployCheckpoint], running: set[str]
) -> Phase:
    """`running` is `running_deploys(deploys.values())`, computed once per service."""
    if instance.id in running:
        return Phase.IN_FLIGHT
    own = deploys.get(deploy_id_for(instance))
    if not unsettled(instance):
        return Phase.SETTLED
    if own is not None and own.outcome in FAILED_OUTCOMES:
        return Phase.FAILED
    return Phase.IN_FLIGHT  # not picked up by its agent yet


def plan_service(inputs: ServiceInputs, *, fence_lock: str, fence: int) -> ServicePlan:
    service = inputs.service
    policy = service.rollout
    live = sorted(inputs.live, key=lambda i: i.id)
    slots = policy.slots(len(live))
    if service.paused:
        return ServicePlan(service, None, (), (), in_flight=0, slots=slots, waiting=0)

    now = _whole_ms(inputs.now)
    state = service.rollout_state
    weights = dict(service.weights)
    history: list[HistoryEntry] = []

    if state.weights != weights:
        started = HistoryEntry(now, "rollout_started", _change(state.weights, weights), weights)
        history.append(started)
        state = _begin(state, weights, now)

    running = running_deploys(inputs.deploys.values())
    phases = {i.id: phase_of(i, inputs.deploys, running) for i in live}
    if state.status is not RolloutStatus.COMPLETE:
        failures = _failures(inputs.deploys.values(), state, weights)
        if failures != state.failures:
            state = dataclasses.replace(state, failures=failures)

    budget = max(1, policy.max_failures)
    spent = sorted(r for r, n in state.failures.items() if n >= budget)
    if spent and state.status is RolloutStatus.ROLLING:
        reason = _stop_reason(spent, state, budget, inputs.deploys.values())
        history.append(HistoryEntry(now, "rollout_stopped", reason, weights))
        target = revert_target(state, weights) if policy.auto_revert else None
        if isinstance(target, dict):
            weights = target
            history.append(
                HistoryEntry(now, "reverted", f"restored the last good weights: {reason}", weights)
            )
            state = _begin(state, weights, now)
        else:
            if target is not None:
                reason += f"; not reverted: {target.value}"
            state = dataclasses.replace(state, status=RolloutStatus.STOPPED, reason=reason)
    halted = set(spent) if state.status is RolloutStatus.STOPPED else set()

    assignments, waiting, in_flight = _moves(live, phases, weights, state, halted, slots, inputs)
    leaving = [
        Assignment(i.id, None, i.assignment_version)
        for i in sorted(inputs.dead, key=lambda i: i.id)
        if i.assigned_revision is not None
    ]
    assignments += leaving

    if state.status is RolloutStatus.ROLLING and not assignments and not waiting and not in_flight:
        failed = sum(1 for phase in phases.values() if phase is Phase.FAILED)
        clean = failed == 0 and not any(state.failures.values())
        history.append(
            HistoryEntry(
                now,
                "rollout_complete",
                "every live instance runs its assignment"
                if clean
                else f"{failed} instance(s) failed to deploy and run their previous revision",
                weights,
            )
        )
        state = dataclasses.replace(
            state,
            status=RolloutStatus.COMPLETE,
            watch_since=None,
            previous_weights=dict(weights) if clean else state.previous_weights,
        )

    if state.slots != slots:
        state = dataclasses.replace(state, slots=slots)

    updated = None
    if history or state != service.rollout_state or weights != service.weights:
        state = dataclasses.replace(state, fence_lock=fence_lock, fence=fence)
        updated = dataclasses.replace(
            service,
            weights=weights,
            rollout_state=state,
            history=bounded_history(service.history, history),
        )
    return ServicePlan(
        service,
        updated,
        tuple(history),
        tuple(assignments),
        in_flight=in_flight,
        slots=slots,
        waiting=waiting,
        leaving=frozenset(a.instance_id for a in leaving),
    )


def _moves(
    live: Sequence[Instance],
    phases: Mapping[str, Phase],
    weights: Mapping[str, int],
    state: RolloutState,
    halted: set[str],
    slots: int,
    inputs: ServiceInputs,
) -> tuple[list[Assignment], int, int]:
    """The assignment writes within the free slots; returns (writes, waiting, in flight)."""
    by_id = {i.id: i for i in live}
    target = assign({i.id: i.assigned_revision for i in live}, weights)
    in_flight = {iid for iid, phase in phases.items() if phase is Phase.IN_FLIGHT}
    free = max(0, slots - len(in_flight))
    writes: list[Assignment] = []
    waiting = 0
    for instance_id, revision in target.items():
        instance = by_id[instance_id]
        if revision == instance.assigned_revision and not _retry(instance, phases, state, inputs):
            continue
        deploys = revision is not None and revision != instance.current_revision
        if deploys and revision in halted:
            waiting += 1
            continue
        if deploys and instance_id not in in_flight:
            if free == 0:
                waiting += 1
                continue
            free -= 1
            in_flight.add(instance_id)
        writes.append(Assignment(instance_id, revision, instance.assignment_version))
    return writes, waiting, len(in_flight)


def _retry(
    instance: Instance, phases: Mapping[str, Phase], state: RolloutState, inputs: ServiceInputs
) -> bool:
    """A new rollout gives an instance that failed in an earlier one a fresh attempt."""
    if phases[instance.id] is not Phase.FAILED or state.status is not RolloutStatus.ROLLING:
        return False
    own = inputs.deploys.get(deploy_id_for(instance))
    return own is not None and state.started_at is not None and own.created_at < state.started_at


def _begin(state: RolloutState, weights: dict[str, int], now: datetime) -> RolloutState:
    # Deploys of an unfinished earlier rollout may still run: keep watching from its start.
    unfinished = state.status is not RolloutStatus.COMPLETE and state.watch_since is not None
    return dataclasses.replace(
        state,
        weights=dict(weights),
        status=RolloutStatus.ROLLING,
        started_at=now,
        watch_since=state.watch_since if unfinished else now,
        failures={},
        reason=None,
    )


def _failures(
    deploys: Iterable[DeployCheckpoint], state: RolloutState, weights: Mapping[str, int]
) -> dict[str, int]:
    counts: dict[str, int] = {}
    if state.started_at is None:
        return counts
    for deploy in deploys:
        if (
            deploy.outcome in FAILED_OUTCOMES
            and deploy.created_at >= state.started_at
            and weights.get(deploy.to_revision, 0) > 0
        ):
            counts[deploy.to_revision] = counts.get(deploy.to_revision, 0) + 1
    return dict(sorted(counts.items()))


def _stop_reason(
    spent: Sequence[str], state: RolloutState, budget: int, deploys: Iterable[DeployCheckpoint]
) -> str:
    parts = [f"{state.failures[r]} deploy(s) of revision {r[:12]} failed" for r in spent]
    failed = [d for d in deploys if d.to_revision in spent and d.outcome in FAILED_OUTCOMES]
    last = max(failed, key=lambda d: (d.updated_at, d.id), default=None)
    reason = f"{'; '.join(parts)} (max_failures {budget})"
    if last is not None and last.error:
        reason += f"; last on {last.instance_id}: {last.error}"
    return reason[:MAX_REASON]


def _change(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    return f"weights changed from {_show(before)} to {_show(after)}"


def _show(weights: Mapping[str, int]) -> str:
    shown = ", ".join(f"{r[:12]}={w}" for r, w in sorted(weights.items()))
    return "{" + shown + "}"


def _whole_ms(moment: datetime) -> datetime:
    """Times are stored in whole milliseconds; planning in them keeps comparisons exact."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
