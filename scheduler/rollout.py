"""Plan one service's rollout step, pure: which assignments to write and what to record.

`plan_service` turns what a pass read about a service (the record, its instances, the
deploys that matter, its gates' readings) into a `ServicePlan`. It does no I/O and reads
no clock, so every rule below is unit-tested without a store; `rollout status` and
`rollout plan` run it too, so they say what the scheduler does.

- **A rollout** begins whenever the weights differ from the ones in the rollout state.
  A rollout that reaches its weights on every live instance (and has baked its last
  step) completes; if it did so without a single failed deploy, its weights become
  `previous_weights`, the revert target.
- **In flight** is an instance with an unfinished deploy, or whose assignment differs from
  the revision it runs while the deploy of that assignment has not failed (pending or
  running). An instance whose deploy of its assignment failed runs its old revision again
  and holds no slot: it is *failed*, and it is not retried within the same rollout (a new
  rollout gives it a fresh attempt).
- **Pacing**: a move that makes an instance deploy (a new revision that it does not run)
  takes one of the policy's `max_in_flight` slots (`revert_max_in_flight` during a
  revert); moves that need no deploy (back to the revision it runs, to no revision, or of
  an instance already in flight) are free. Moves that find no slot wait for a later pass.
- **Steps** (`scheduler.steps`) let only so many moves begin per step, then bake; gates
  (`scheduler.gates`) hold a step (webhooks) or fail the rollout (alarms, the progress
  deadline). An instance that joins mid-rollout is no move: it gets its apportioned
  revision at once, whatever the step.
- **Failure budget** (`budget_rule` says it in words): deploys of a weighted revision
  created since the rollout began (or was resumed after a hold) that ended `rolled_back`
  or `failed` are counted per revision; deploys still in flight do not count. When one
  revision's count reaches `max_failures` (count >= max_failures; 0 counts as 1) the
  rollout fails.
- **Failure action** (budget spent, an alarm, the deadline): `revert` restores the last
  good weights (`engine.operations.rules.revert_target`, as `flotilla rollout revert`)
  and rolls them out fast: no steps, no bake, no gates, its own pace; with none known
  the rollout stops (nothing more moves to the failed revision). `hold` pauses the
  service with what runs and says why (`rollout resume` carries on, failures counted
  afresh). Either way the service history says why.
- **Paused** services move nothing that runs and change no record; an instance that
  joins one gets a revision of the mix the others run (Hamilton over their revisions),
  so scaling is never suspended.
- **Dead** instances lose their assignment (they are not counted by the apportionment).
- **Being deleted** (`scheduler.deleting`): every instance is assigned no revision at
  once (no pacing: unassignments take deploy slots like any deploy, so the deploy lock
  paces them), nothing else moves, and the plan says when the record may go (`deletable`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.operations.rules import bounded_history
from flotilla.engine.records import (
    HistoryEntry,
    Instance,
    RolloutPolicy,
    RolloutState,
    RolloutStatus,
    RolloutStep,
    Service,
)
from flotilla.scheduler.apportion import assign, hamilton_counts
from flotilla.scheduler.assignments import Assignment, held, paced_moves
from flotilla.scheduler.deleting import deletable, deleting_waits, unassigning, unassignments
from flotilla.scheduler.failures import count_failures, fail, gate_failure, stop_reason
from flotilla.scheduler.gates import ALARM_POLL, Readings, alarms_unknown, deadline_of
from flotilla.scheduler.phases import (
    Phase,
    deploy_window,
    needs_deploy_list,
    phase_of,
    running_deploys,
    split_live,
    unsettled,
)
from flotilla.scheduler.steps import (
    StepProgress,
    advance,
    apply_promotion,
    begin_rollout,
    moves_of,
    plan_steps,
    step_words,
)
from flotilla.scheduler.waits import Wait, paused_waits, rolling_waits

# Re-exported: the planner's callers read phases and deploy windows from here.
__all__ = [
    "Assignment",
    "Phase",
    "ServiceInputs",
    "ServicePlan",
    "deploy_window",
    "needs_deploy_list",
    "phase_of",
    "plan_service",
    "running_deploys",
    "split_live",
    "unsettled",
]


@dataclass(frozen=True)
class ServiceInputs:
    """What a pass read about one service."""

    service: Service
    live: Sequence[Instance]
    dead: Sequence[Instance]
    deploys: Mapping[str, DeployCheckpoint]  # by deploy id
    now: datetime
    readings: Readings = field(default_factory=Readings)  # its gates, as read this pass
    announced: datetime | None = None  # events out published up to here (scheduler.announce)


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
    waits: tuple[Wait, ...] = ()  # what the rollout waits for (scheduler.waits)
    needs_webhooks: int | None = None  # call this step's webhooks, then plan again
    wake_at: datetime | None = None  # plan again by then, even if nothing happens
    steps: tuple[RolloutStep, ...] = ()  # the steps the rollout follows
    # Being deleted and nothing holds the record any more: the pass deletes it (on the
    # version the plan was made on).
    deletable: bool = False

    @property
    def writes_nothing(self) -> bool:
        return self.updated is None and not self.assignments


def plan_service(inputs: ServiceInputs, *, fence_lock: str, fence: int) -> ServicePlan:
    service = inputs.service
    policy = service.rollout
    live = sorted(inputs.live, key=lambda i: i.id)
    now = _whole_ms(inputs.now)
    if service.deleting:
        return _deleting(inputs, live)
    if service.paused:
        return _paused(inputs, live)

    state = service.rollout_state
    weights = dict(service.weights)
    history: list[HistoryEntry] = []
    hold = False

    if state.status is RolloutStatus.HELD:  # not paused any more: an operator resumed it
        state = dataclasses.replace(
            state, status=RolloutStatus.ROLLING, reason=None, resumed_at=now
        )
    if state.weights != weights:
        fast = _reverting(service, weights)
        history.append(
            HistoryEntry(now, "rollout_started", _change(state.weights, weights), weights)
        )
        state = begin_rollout(state, weights, now, fast=fast, promoted=_promotion_number(service))
        history += _first_step(policy, state, now)
    state, promoted = apply_promotion(service, state, plan_steps(policy, state), now)
    history += promoted

    running = running_deploys(inputs.deploys.values())
    phases = {i.id: phase_of(i, inputs.deploys, running) for i in live}
    deploying = sorted(iid for iid, phase in phases.items() if phase is Phase.IN_FLIGHT)
    if state.status is not RolloutStatus.COMPLETE:
        failures = count_failures(inputs.deploys.values(), state, weights)
        if failures != state.failures:
            state = dataclasses.replace(state, failures=failures)

    budget = max(1, policy.max_failures)
    spent = sorted(r for r, n in state.failures.items() if n >= budget)
    failure: str | None = None
    if state.status is RolloutStatus.ROLLING:
        if spent:
            failure = stop_reason(spent, state, budget, inputs.deploys.values())
        elif not state.fast:
            failure = gate_failure(service, state, inputs.readings, inputs.deploys, deploying, now)
    if failure is not None:
        weights, state, hold, entries = fail(service, state, weights, failure, now)
        history += entries
    halted = set(spent) if state.status is RolloutStatus.STOPPED else set()

    steps = plan_steps(policy, state)
    slots = policy.slots(len(live), reverting=state.fast)
    target = assign({i.id: i.assigned_revision for i in live}, weights)
    moves = moves_of(live, target, inputs.deploys.values(), state, set(deploying), halted)
    unknown = None if state.fast else alarms_unknown(policy, inputs.readings)
    progress = StepProgress(state, (), 0, False, None, False)
    if state.status is RolloutStatus.ROLLING and not hold:
        progress = advance(
            service, state, steps, moves, deploying=bool(deploying),
            blocked=unknown is not None, readings=inputs.readings, now=now,
        )  # fmt: skip
        state = progress.state
        history += progress.history
    room = progress.room if state.status is RolloutStatus.ROLLING and not hold else 0

    if hold:
        assignments, waiting, later, in_flight = held(live, phases, running)
    else:
        assignments, waiting, later, in_flight = paced_moves(
            live, phases, target, state, halted, slots, room, moves.begun, inputs.deploys
        )
    leaving = [
        Assignment(i.id, None, i.assignment_version)
        for i in sorted(inputs.dead, key=lambda i: i.id)
        if i.assigned_revision is not None
    ]
    assignments += leaving

    if (
        state.status is RolloutStatus.ROLLING
        and progress.finished
        and not (assignments or waiting or later or in_flight)
    ):
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

    deadline = deadline_of(policy, state, inputs.deploys.values(), service.history)
    waits = rolling_waits(
        service, state, steps, progress, alarms_unknown=unknown, in_flight=in_flight,
        slots=slots, waiting=waiting, deadline=deadline,
    )  # fmt: skip
    updated = None
    if history or hold or state != service.rollout_state or weights != service.weights:
        announced = max(
            (t for t in (state.announced_until, inputs.announced) if t is not None), default=None
        )
        state = dataclasses.replace(
            state, fence_lock=fence_lock, fence=fence, announced_until=announced
        )
        updated = dataclasses.replace(
            service,
            weights=weights,
            rollout_state=state,
            history=bounded_history(service.history, history),
            paused=hold or service.paused,
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
        waits=waits,
        needs_webhooks=progress.needs_webhooks,
        wake_at=_wake_at(service, state, waits, now),
        steps=steps,
    )


def _paused(inputs: ServiceInputs, live: Sequence[Instance]) -> ServicePlan:
    """A paused (or held) service: nothing that runs moves. An instance that joins gets a
    revision of the mix the others run, so scaling goes on (the module's doc)."""
    service = inputs.service
    mix = Counter(i.current_revision for i in live if i.current_revision is not None)
    joining = [i for i in live if i.current_revision is None and i.assigned_revision is None]
    assignments: list[Assignment] = []
    if mix and joining:
        counts = hamilton_counts(len(joining), dict(mix))
        revisions = [r for r in sorted(counts) for _ in range(counts[r])]
        assignments = [
            Assignment(i.id, r, i.assignment_version)
            for i, r in zip(joining, revisions, strict=True)
        ]
    steps = plan_steps(service.rollout, service.rollout_state)
    slots = service.rollout.slots(len(live), reverting=service.rollout_state.fast)
    return ServicePlan(
        service, None, (), tuple(assignments), in_flight=0, slots=slots, waiting=0,
        waits=paused_waits(service), steps=steps,
    )  # fmt: skip


def _deleting(inputs: ServiceInputs, live: Sequence[Instance]) -> ServicePlan:
    """A service being deleted: no revision for anyone, and the record goes once nothing
    holds it (the module's doc)."""
    service = inputs.service
    assignments = unassignments([*live, *inputs.dead])
    leaving = frozenset(a.instance_id for a in assignments) & {i.id for i in inputs.dead}
    in_flight, failed = unassigning(live, inputs.deploys)
    return ServicePlan(
        service, None, (), tuple(assignments), in_flight=in_flight,
        slots=service.rollout_state.slots, waiting=0, leaving=leaving,
        waits=deleting_waits(service.name, in_flight, failed),
        deletable=not assignments and deletable(live, inputs.deploys.values()),
    )  # fmt: skip


def _wake_at(
    service: Service, state: RolloutState, waits: Sequence[Wait], now: datetime
) -> datetime | None:
    """When this service must be planned again even if nothing happens (a bake ends, a
    gate is retried, the deadline passes, the alarms are read again)."""
    times = [w.until for w in waits if w.until is not None]
    if service.rollout.alarms and state.status is RolloutStatus.ROLLING and not state.fast:
        times.append(now + ALARM_POLL)
    return min(times, default=None)


def _first_step(policy: RolloutPolicy, state: RolloutState, now: datetime) -> list[HistoryEntry]:
    steps = plan_steps(policy, state)
    if len(steps) == 1:
        return []
    return [HistoryEntry(now, "step_reached", step_words(steps, 0), dict(state.weights))]


def _reverting(service: Service, weights: Mapping[str, int]) -> bool:
    """Whether these new weights are an operator's `rollout revert` (fast, like the
    scheduler's own): the latest revert entry set them, after the last rollout began."""
    began = service.rollout_state.started_at
    for entry in reversed(service.history):
        if entry.kind == "reverted":
            return entry.weights == dict(weights) and (began is None or entry.at >= began)
    return False


def _promotion_number(service: Service) -> int:
    return 0 if service.promotion is None else service.promotion.number


def _change(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    return f"weights changed from {_show(before)} to {_show(after)}"


def _show(weights: Mapping[str, int]) -> str:
    shown = ", ".join(f"{r[:12]}={w}" for r, w in sorted(weights.items()))
    return "{" + shown + "}"


def _whole_ms(moment: datetime) -> datetime:
    """Times are stored in whole milliseconds; planning in them keeps comparisons exact."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
