"""Why a rollout waits, in words: what `flotilla rollout status` shows and the scheduler logs.

The planner (`scheduler.rollout`) says what it waits for as it plans, so status and the
scheduler cannot disagree: status runs the same planner on what it reads. Each `Wait`
has a kind scripts can match (the JSON's `waiting_for`), a sentence for a person, and,
when it ends by itself, the time it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flotilla.engine.records import RolloutState, RolloutStatus, RolloutStep, Service
from flotilla.scheduler.gates import GATE_RETRY
from flotilla.scheduler.steps import StepProgress, bake_ends, step_words

# The kinds, for scripts (the CLI adds `silent` and `unhealthy` instances).
PAUSED = "paused"
HELD = "held"
STOPPED = "stopped"
PAUSE_STEP = "pause_step"
GATE = "gate"
ALARMS = "alarms"
BAKE = "bake"
DEPLOYS = "deploys"
SLOT = "slot"
DEADLINE = "deadline"
FAILED_UNASSIGNMENTS = "failed_unassignments"  # a deletion held by failed unassignments


@dataclass(frozen=True)
class Wait:
    kind: str
    text: str
    until: datetime | None = None  # when it ends by itself, if it does


def paused_waits(service: Service) -> tuple[Wait, ...]:
    state = service.rollout_state
    if state.status is RolloutStatus.HELD:
        return (
            Wait(
                HELD,
                f"held by the scheduler ({state.reason}); `flotilla rollout resume "
                f"{service.name}` carries on, `flotilla rollout revert {service.name}` goes back",
            ),
        )
    return (Wait(PAUSED, f"paused: nothing moves until `flotilla rollout resume {service.name}`"),)


def rolling_waits(
    service: Service,
    state: RolloutState,
    steps: tuple[RolloutStep, ...],
    progress: StepProgress,
    *,
    alarms_unknown: str | None,
    in_flight: int,
    slots: int,
    waiting: int,
    deadline: datetime | None,
) -> tuple[Wait, ...]:
    """What a rolling (or stopped) rollout waits for after this pass's plan."""
    if state.status is RolloutStatus.STOPPED:
        return (Wait(STOPPED, f"stopped: {state.reason}"),)
    if state.status is not RolloutStatus.ROLLING:
        return ()
    found: list[Wait] = []
    index = min(state.step, len(steps) - 1)
    where = step_words(steps, index) if len(steps) > 1 else "the rollout"
    if alarms_unknown is not None:
        found.append(Wait(ALARMS, f"{where} does not advance: {alarms_unknown}"))
    if progress.gate_closed:
        gate = state.gate
        reason = gate.reason if gate is not None and gate.step == index else None
        retry = gate.at + GATE_RETRY if gate is not None and gate.step == index else None
        text = f"{where} waits at its webhook gate"
        text += f": {reason}" if reason else ": its webhooks are called at the next pass"
        if retry is not None:
            text += f"; called again at {retry:%H:%M:%S} UTC"
        text += f" (or `flotilla rollout promote {service.name}`)"
        found.append(Wait(GATE, text, retry))
    step = steps[index]
    skipped = state.skip_step == index
    if step.is_pause and not skipped and not progress.room and not in_flight:
        found.append(
            Wait(PAUSE_STEP, f"{where} is a pause: `flotilla rollout promote {service.name}`")
        )
    bake = bake_ends(state, steps)
    if bake is not None and not progress.finished and not in_flight:
        found.append(Wait(BAKE, f"{where} bakes until {bake:%H:%M:%S} UTC", bake))
    if in_flight:
        found.append(Wait(DEPLOYS, f"{in_flight} instance(s) deploying ({in_flight}/{slots})"))
    if waiting:
        found.append(Wait(SLOT, f"{waiting} instance(s) wait for a free slot of {slots}"))
    if deadline is not None and in_flight:
        found.append(Wait(DEADLINE, f"a deploy must finish by {deadline:%H:%M:%S} UTC", deadline))
    return tuple(found)
