"""What a change of weights would do, simulated on a copy: `flotilla rollout plan`.

`simulate` runs the scheduler's own planner (`scheduler.rollout.plan_service`) again and
again on an in-memory copy of what a pass reads, where every deploy a round starts
succeeds before the next round, every alarm reads OK, every webhook answers 2xx and every
pause step is promoted. Each round that starts deploys is a *wave*: the instances of one
planning round, in the order the scheduler would assign them. Between waves the plan
notes where a step begins, where it bakes (the copy's clock jumps to the bake's end) and
where it waits for a webhook gate or for `flotilla rollout promote`. Nothing is written.

Which units restart: today a deploy stops every unit of the old revision and starts every
unit of the new one, so each moving instance restarts the units of both (`Move.restarts`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.ports import AlarmState
from flotilla.engine.records import (
    GateResult,
    Instance,
    Promotion,
    RolloutStatus,
    RolloutStep,
    Service,
    deploy_id_for,
)
from flotilla.scheduler.gates import Readings
from flotilla.scheduler.rollout import ServiceInputs, ServicePlan, plan_service, unsettled
from flotilla.scheduler.steps import step_words
from flotilla.scheduler.waits import BAKE, PAUSE_STEP

MAX_ROUNDS = 5000  # planning rounds before the plan gives up (10 000 instances, 2 at a time)
PLANNER = "rollout plan"  # who the simulated promotions and gate answers are by

# Boundary kinds between waves.
STEP = "step"
BAKE_ENDS = "bake"
PAUSE = "pause"
GATE = "gate"


@dataclass(frozen=True)
class Move:
    instance_id: str
    from_revision: str | None  # None: the instance joins, it runs nothing yet
    to_revision: str
    restarts: tuple[str, ...]  # unit names of both revisions


@dataclass(frozen=True)
class Wave:
    number: int
    step: int  # index into the plan's steps
    moves: tuple[Move, ...]


@dataclass(frozen=True)
class Boundary:
    kind: str  # STEP, BAKE_ENDS, PAUSE or GATE
    text: str
    seconds: int = 0  # how long the rollout waits here by itself (a bake)


@dataclass(frozen=True)
class RolloutPlan:
    service: Service  # as stored
    weights: dict[str, int]  # the weights planned for
    steps: tuple[RolloutStep, ...]
    timeline: tuple[Wave | Boundary, ...]
    unassigned: tuple[str, ...]  # instances the weights leave without a revision
    ended: str  # "complete", or why the simulation stopped

    @property
    def waves(self) -> list[Wave]:
        return [item for item in self.timeline if isinstance(item, Wave)]


def simulate(
    service: Service,
    weights: Mapping[str, int],
    live: Sequence[Instance],
    dead: Sequence[Instance],
    deploys: Mapping[str, DeployCheckpoint],
    units: Mapping[str, Sequence[str]],
    now: datetime,
) -> RolloutPlan:
    """The waves in which `weights` would move `service`'s instances (the module's doc).
    `units` maps each revision id to its unit names. A paused or held service is planned
    as if resumed."""
    record = dataclasses.replace(service, weights=dict(weights), paused=False)
    sim = _Copy(record, {i.id: i for i in live}, list(dead), dict(deploys), now, units)
    ended = "the simulation gave up after too many rounds"
    idle = 0
    for _ in range(MAX_ROUNDS):
        plan = sim.round()
        if sim.record.rollout_state.status is not RolloutStatus.ROLLING:
            ended = sim.record.rollout_state.status.value
            if sim.record.rollout_state.status is RolloutStatus.COMPLETE:
                break
            ended = f"{ended}: {sim.record.rollout_state.reason}"
            break
        if plan.assignments or sim.finished_any:
            idle = 0
            continue
        pause = next((w for w in plan.waits if w.kind == PAUSE_STEP), None)
        bake = next((w for w in plan.waits if w.kind == BAKE), None)
        if pause is not None:
            sim.promote(pause.text)
            idle = 0
            continue
        if bake is not None and bake.until is not None and bake.until > sim.now:
            seconds = round((bake.until - sim.now).total_seconds())
            where = step_words(sim.steps, min(sim.record.rollout_state.step, len(sim.steps) - 1))
            sim.timeline.append(Boundary(BAKE_ENDS, f"{where} bakes {seconds} s", seconds))
            sim.now = bake.until
            idle = 0
            continue
        idle += 1
        if idle > 3:
            waits = "; ".join(w.text for w in plan.waits) or "nothing more moves"
            ended = f"the rollout would wait: {waits}"
            break
        if plan.wake_at is not None and plan.wake_at > sim.now:
            sim.now = plan.wake_at  # e.g. the alarms are read again
    unassigned = tuple(sorted(i.id for i in sim.instances.values() if i.assigned_revision is None))
    return RolloutPlan(service, dict(weights), sim.steps, tuple(sim.timeline), unassigned, ended)


class _Copy:
    """The in-memory copy the planner runs on, and what each round did to it."""

    def __init__(
        self,
        record: Service,
        instances: dict[str, Instance],
        dead: list[Instance],
        deploys: dict[str, DeployCheckpoint],
        now: datetime,
        units: Mapping[str, Sequence[str]],
    ) -> None:
        self.record = record
        self.instances = instances
        self.dead = dead
        self.deploys = deploys
        self.now = now
        self.units = units
        self.timeline: list[Wave | Boundary] = []
        self.steps: tuple[RolloutStep, ...] = ()
        self.finished_any = False
        alarms = dict.fromkeys(record.rollout.alarms, AlarmState.OK)
        self.readings = Readings(alarms=alarms)

    def _plan(self) -> ServicePlan:
        inputs = ServiceInputs(
            self.record, list(self.instances.values()), self.dead, self.deploys, self.now,
            self.readings,
        )  # fmt: skip
        state = self.record.rollout_state
        return plan_service(inputs, fence_lock=state.fence_lock or "scheduler", fence=state.fence)

    def round(self) -> ServicePlan:
        """One scheduler pass, then every deploy it started succeeds."""
        plan = self._plan()
        if plan.needs_webhooks is not None:  # the pass calls them; here they answer 2xx
            step = plan.needs_webhooks
            answer = GateResult(step, True, self.now)
            self.readings = dataclasses.replace(self.readings, webhooks=answer)
            self.timeline.append(Boundary(GATE, f"step {step + 1}'s webhooks must answer 2xx"))
            plan = self._plan()
        self.steps = plan.steps
        if plan.updated is not None:
            self.record = plan.updated
        for entry in plan.new_history:
            if entry.kind == "step_reached":
                self.timeline.append(Boundary(STEP, entry.reason))
        self.dead = []  # their assignments are cleared by this plan: they left
        moves: list[Move] = []
        for assignment in plan.assignments:
            instance = self.instances.get(assignment.instance_id)
            if instance is None:
                continue
            revision = assignment.revision
            if revision is not None and revision != instance.current_revision:
                moves.append(self._move(instance, revision))
            self.instances[instance.id] = dataclasses.replace(
                instance,
                assigned_revision=revision,
                assignment_version=instance.assignment_version + 1,
            )
        if moves:
            number = len([t for t in self.timeline if isinstance(t, Wave)]) + 1
            step = self.record.rollout_state.step
            self.timeline.append(Wave(number, step, tuple(moves)))
        self.finished_any = self._succeed()
        return plan

    def _move(self, instance: Instance, revision: str) -> Move:
        old = instance.current_revision
        names = set(self.units.get(revision, ()))
        if old is not None:
            names |= set(self.units.get(old, ()))
        return Move(instance.id, old, revision, tuple(sorted(names)))

    def _succeed(self) -> bool:
        """Every instance assigned a revision it does not run deploys it, successfully."""
        finished = False
        for instance in list(self.instances.values()):
            if not unsettled(instance) or instance.assigned_revision is None:
                continue
            deploy_id = deploy_id_for(instance)
            self.deploys[deploy_id] = DeployCheckpoint(
                id=deploy_id,
                service=self.record.name,
                instance_id=instance.id,
                from_revision=instance.current_revision,
                to_revision=instance.assigned_revision,
                state="done",
                machine_version=1,
                created_at=self.now,
                updated_at=self.now,
                outcome=Outcome.SUCCEEDED,
            )
            self.instances[instance.id] = dataclasses.replace(
                instance, current_revision=instance.assigned_revision
            )
            finished = True
        return finished

    def promote(self, text: str) -> None:
        """What `flotilla rollout promote` does to the record."""
        last = self.record.promotion
        number = max(last.number if last else 0, self.record.rollout_state.promoted) + 1
        promotion = Promotion(number, False, self.now, PLANNER)
        self.record = dataclasses.replace(self.record, promotion=promotion)
        self.timeline.append(Boundary(PAUSE, text))
