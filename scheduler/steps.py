"""Step plans, pure: how many of a rollout's moves a step allows, and when it gives way.

A rollout *moves* an instance when its apportioned revision differs from the one it runs
and the instance already runs one; an instance that joins during the rollout (it runs
nothing yet) is no move: it goes straight to its apportioned revision, whatever the step,
and never deploys the old revision first. A move has *begun* once the instance has a
deploy of this rollout (finished, failed or running) or is deploying.

- A step's `amount` is how many of the rollout's moves may have begun by its end: a count
  of instances, or a share of the moves rounded up (25 % of 10 moves is 3), never more
  than there are; a `pause` step allows what the step before it did. The last step is
  100 %: every move.
- A step is *done* when every move it allows has begun (or none is left to begin) and no
  deploy is under way; its failed deploys count as ended (the failure budget decides
  about them). Then it bakes for its bake time; a `pause` step waits for a promotion.
  A step that allowed no move beyond the step before it has nothing new to watch and
  does not bake; a rollout with no move at all (a first deploy: every instance joins)
  waits at no step.
- Its webhooks (`scheduler.gates`) are called before it moves anything; a step that has
  nothing to move calls none.
- `flotilla rollout promote` skips the current step's waits (its gate, its bake, its
  pause): `skip_step` is that step. `--full` jumps to the last step and skips its waits.
- A revert (`RolloutState.fast`) and a policy without steps follow one step of 100 %
  without bake, the plan the scheduler always had.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.records import (
    HistoryEntry,
    Instance,
    RolloutPolicy,
    RolloutState,
    RolloutStatus,
    RolloutStep,
    Service,
)
from flotilla.scheduler.gates import Readings, gate_of

ONE_STEP = (RolloutStep("100%", 0),)


def plan_steps(policy: RolloutPolicy, state: RolloutState) -> tuple[RolloutStep, ...]:
    """The steps this rollout follows (see the module's doc)."""
    if state.fast or not policy.steps:
        return ONE_STEP
    return policy.steps


def allowed(steps: tuple[RolloutStep, ...], index: int, moves: int) -> int:
    """How many of `moves` may have begun by the end of step `index`."""
    for step in reversed(steps[: index + 1]):
        if step.amount is None:
            continue  # a pause allows what the step before it did
        if step.amount.endswith("%"):
            return min(moves, math.ceil(moves * int(step.amount[:-1]) / 100))
        return min(moves, int(step.amount))
    return 0


def step_words(steps: tuple[RolloutStep, ...], index: int) -> str:
    """`step 2 of 3 (25%, bake 300 s)` as history, events and status say it."""
    step = steps[index]
    what = "pause" if step.amount is None else step.amount
    if step.bake_seconds:
        what += f", bake {step.bake_seconds} s"
    return f"step {index + 1} of {len(steps)} ({what})"


@dataclass(frozen=True)
class Moves:
    """The rollout's moves as a pass finds them."""

    begun: frozenset[str]  # instance ids
    pending: frozenset[str]  # must still move, not begun

    @property
    def total(self) -> int:
        return len(self.begun) + len(self.pending)


def moves_of(
    live: Iterable[Instance],
    target: Mapping[str, str | None],
    deploys: Iterable[DeployCheckpoint],
    state: RolloutState,
    deploying: set[str],
    halted: set[str],
) -> Moves:
    """`target` is the apportionment; `deploying` the instances in flight; `halted` the
    revisions nothing more moves to (a stopped rollout)."""
    since = state.started_at
    # A move's deploy: from a revision towards the instance's target, created since the
    # rollout began (a deploy of an earlier rollout may carry the same millisecond; one
    # from no revision was a join).
    with_deploy = {
        (d.instance_id, d.to_revision)
        for d in deploys
        if since is not None and d.created_at >= since and d.from_revision is not None
    }
    begun: set[str] = set()
    pending: set[str] = set()
    for instance in live:
        if instance.current_revision is None:
            continue  # joining: not a move (the module's doc)
        revision = target.get(instance.id)
        if (instance.id, revision) in with_deploy or instance.id in deploying:
            begun.add(instance.id)
            continue
        if revision not in (None, instance.current_revision) and revision not in halted:
            pending.add(instance.id)
    return Moves(frozenset(begun), frozenset(pending))


@dataclass(frozen=True)
class StepProgress:
    """Where a rollout stands in its steps after `advance`."""

    state: RolloutState
    history: tuple[HistoryEntry, ...]
    room: int  # moves that may still begin in the current step (0 behind a closed gate)
    finished: bool  # the last step is done and baked: the rollout may complete
    needs_webhooks: int | None  # the step whose webhooks this pass must call first
    gate_closed: bool  # the current step waits at its gate


def begin_rollout(
    state: RolloutState, weights: dict[str, int], now: datetime, *, fast: bool, promoted: int
) -> RolloutState:
    """A new rollout towards `weights`, from step 0; `fast` for a revert."""
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
        step=0,
        step_since=now,
        baking_since=None,
        gate=None,
        skip_step=None,
        promoted=promoted,  # a promotion made before this rollout is not for it
        fast=fast,
        resumed_at=None,
    )


def apply_promotion(
    service: Service, state: RolloutState, steps: tuple[RolloutStep, ...], now: datetime
) -> tuple[RolloutState, tuple[HistoryEntry, ...]]:
    """Apply the operator's latest promotion, once (the module's doc)."""
    promotion = service.promotion
    if promotion is None or promotion.number <= state.promoted:
        return state, ()
    state = dataclasses.replace(state, promoted=promotion.number)
    if not promotion.full:
        return dataclasses.replace(state, skip_step=state.step), ()
    last = len(steps) - 1
    entries: tuple[HistoryEntry, ...] = ()
    if state.step != last:
        reason = f"{step_words(steps, last)}: promoted to the end by {promotion.by}"
        entries = (HistoryEntry(now, "step_reached", reason, dict(state.weights)),)
    state = dataclasses.replace(state, step=last, step_since=now, baking_since=None, skip_step=last)
    return state, entries


def advance(
    service: Service,
    state: RolloutState,
    steps: tuple[RolloutStep, ...],
    moves: Moves,
    *,
    deploying: bool,
    blocked: bool,
    readings: Readings,
    now: datetime,
) -> StepProgress:
    """Carry the rollout through its steps as far as it may go in this pass: open the
    current step's gate, start its bake once it is done, give way to the next step once
    the bake (or a promotion) allows. `deploying`: some instance is in flight; `blocked`:
    the alarms cannot be judged, so nothing more moves and no step advances."""
    history: list[HistoryEntry] = []
    if state.step >= len(steps):  # the policy lost steps since the rollout began
        state = dataclasses.replace(state, step=len(steps) - 1)

    def progress(
        room: int, *, finished: bool = False, needs: int | None = None, closed: bool = False
    ) -> StepProgress:
        return StepProgress(state, tuple(history), room, finished, needs, closed)

    while True:
        index = state.step
        step = steps[index]
        room = max(0, allowed(steps, index, moves.total) - len(moves.begun))
        if room and not step.is_pause:
            answered = readings.webhooks
            if answered is not None and answered.step == index:
                state = dataclasses.replace(state, gate=answered)
            gate = gate_of(service.rollout, state, index, now)
            if not gate.open:
                return progress(0, needs=index if gate.due else None, closed=True)
        if blocked:
            return progress(0)
        if room or deploying:
            return progress(room)
        # Nothing to watch: a rollout without a move (every instance joins) skips every
        # wait, and a step that began no move of its own does not bake.
        skipped = state.skip_step == index or moves.total == 0
        adds = allowed(steps, index, moves.total) > allowed(steps, index - 1, moves.total)
        if step.is_pause and not skipped:
            return progress(0)
        if step.bake_seconds and adds and not skipped:
            baking_since = state.baking_since
            if baking_since is None:
                baking_since = now
                state = dataclasses.replace(state, baking_since=now)
            if now < baking_since + timedelta(seconds=step.bake_seconds):
                return progress(0)
        if index == len(steps) - 1:
            return progress(0, finished=True)
        state = dataclasses.replace(state, step=index + 1, step_since=now, baking_since=None)
        reason = step_words(steps, index + 1)
        if steps[index + 1].is_pause:
            reason += f": waits for `flotilla rollout promote {service.name}`"
        history.append(HistoryEntry(now, "step_reached", reason, dict(state.weights)))


def bake_ends(state: RolloutState, steps: tuple[RolloutStep, ...]) -> datetime | None:
    """When the current step's bake ends, while it bakes."""
    step = steps[min(state.step, len(steps) - 1)]
    if state.baking_since is None or not step.bake_seconds or state.skip_step == state.step:
        return None
    return state.baking_since + timedelta(seconds=step.bake_seconds)
