"""The scheduler killed during a pass, again and again, while an operator changes weights.

The simulated fleet of tests/simulation/ (real `Scheduler`s, real agents and runners on
in-memory adapters and one simulated clock): two scheduler processes, one leading. At
random moments the leader is killed at a write of its pass (before the write reaches the
store, or just after), like SIGKILL: everything it would do afterwards, including
releasing its lease, is lost; a fresh process replaces it. Meanwhile an operator changes
the weights twice, each time in the instant before a scheduler's write of the service
record, so that write races the operator's. At the end: the last weights the operator set
are the ones rolled out to every instance, every deploy succeeded, never more instances out
of the load balancer than `max_in_flight`, no lease of a dead scheduler outlives its
term. The seed is printed; FLOTILLA_FAULT_SEED replays a run.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
from datetime import timedelta
from typing import Any

import pytest

from flotilla.engine.records import RolloutStatus, Service
from flotilla.engine.updates import modify_service
from tests.simulation.world import SERVICE, Counting, Fleet, SimSettings
from tests.support.faults import Crash

pytestmark = pytest.mark.faults

WRITES = frozenset({"set_assignment", "update_service"})


class Process:
    """One scheduler process's view of the store and locks; dies when told to."""

    def __init__(self, fleet: Fleet, owner: str, plan: KillPlan) -> None:
        self.owner = owner
        self.dead = False
        self.store = _Killable(fleet.scheduler_store, self, plan, watch=True)
        self.locks = _Killable(fleet.scheduler_locks, self, plan, watch=False)
        self.replaced = False
        self.scheduler = fleet.scheduler(owner, store=self.store, locks=self.locks)


class KillPlan:
    """When to kill the writing scheduler, and when the operator races it."""

    def __init__(self, generator: random.Random, fleet: Fleet, weights: list[dict[str, int]]):
        self.random = generator
        self.fleet = fleet
        self.kills = 0
        self.kills_left = 4
        self.operator_changes = list(weights)
        self.landed: list[dict[str, int]] = []
        self.armed = False

    def before(self, process: Process, name: str) -> None:
        if not self.armed or name not in WRITES:
            return
        if name == "update_service" and self.operator_changes and self.random.random() < 0.5:
            weights = self.operator_changes.pop(0)
            modify_service(
                self.fleet.store, SERVICE, lambda s: dataclasses.replace(s, weights=weights)
            )
            self.landed.append(weights)
        if self.kills_left and self.random.random() < 0.15:
            self.kills_left -= 1
            self.kills += 1
            process.dead = True
            raise Crash(f"{process.owner} killed before {name}")

    def after(self, process: Process, name: str) -> None:
        if self.armed and name in WRITES and self.kills_left and self.random.random() < 0.05:
            self.kills_left -= 1
            self.kills += 1
            process.dead = True
            raise Crash(f"{process.owner} killed after {name}")


def _with(service: Service, *, weights: dict[str, int]) -> Service:
    return dataclasses.replace(service, weights=weights)


class _Killable:
    def __init__(self, inner: Counting, process: Process, plan: KillPlan, *, watch: bool):
        self._inner = inner
        self._process = process
        self._plan = plan
        self._watch = watch

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._process.dead:  # a dead process does nothing more, not even clean up
                raise Crash(f"{self._process.owner} is dead")
            if self._watch:
                self._plan.before(self._process, name)
            result = method(*args, **kwargs)
            if self._watch:
                self._plan.after(self._process, name)
            return result

        return call


def test_schedulers_killed_mid_pass_lose_no_weight_change_and_the_rollout_converges() -> None:
    seed = int(os.environ.get("FLOTILLA_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nFLOTILLA_FAULT_SEED={seed}")
    generator = random.Random(seed)
    fleet = Fleet(SimSettings(instances=30, max_in_flight="3"))
    v1, v2, v3 = (fleet.revision(label) for label in ("v1", "v2", "v3"))
    fleet.install_fleet(v1)
    plan = KillPlan(generator, fleet, [{v2.id: 50, v3.id: 50}, {v3.id: 100}])
    processes: list[Process] = []

    def spawn(owner: str) -> None:
        process = Process(fleet, owner, plan)
        processes.append(process)
        fleet.clock.spawn(owner, process.scheduler.run)

    spawn("scheduler-a")
    spawn("scheduler-b")
    fleet.start(scheduler=False)
    fleet.clock.sleep(60)

    plan.armed = True
    modify_service(fleet.store, SERVICE, lambda s: dataclasses.replace(s, weights={v2.id: 100}))
    deadline = fleet.clock.now() + timedelta(hours=3)
    generation = 0
    while True:
        for process in [p for p in processes if p.dead and not p.replaced]:
            process.replaced = True
            generation += 1
            spawn(f"scheduler-{generation}")  # systemd restarts it
        service = fleet.store.get_service(SERVICE)
        if (
            not plan.operator_changes
            and service.rollout_state.status is RolloutStatus.COMPLETE
            and service.weights == {v3.id: 100}
            and all(i.current_revision == v3.id for i in fleet.store.list_instances(SERVICE))
        ):
            break
        if not plan.operator_changes and not plan.kills_left:
            plan.armed = False
        if plan.operator_changes and fleet.clock.now() > deadline - timedelta(hours=2):
            # The races did not all happen by chance: make the rest plainly.
            for weights in plan.operator_changes:
                modify_service(fleet.store, SERVICE, functools.partial(_with, weights=weights))
                plan.landed.append(weights)
            plan.operator_changes.clear()
        assert fleet.clock.now() < deadline, f"no convergence; {service.rollout_state}"
        fleet.clock.sleep(5)

    print(f"kills: {plan.kills}; operator changes raced: {len(plan.landed)}")
    unexpected = [e for e in fleet.clock.errors if "Crash" not in e.splitlines()[0]]
    assert not unexpected, unexpected[0]
    assert plan.kills >= 1
    assert plan.landed[-1] == {v3.id: 100}
    history = fleet.store.get_service(SERVICE).history
    # Intermediate weights may never get a rollout of their own (replaced before the
    # scheduler planned them); the last ones always do, and nothing overwrote them.
    started = [e.weights for e in history if e.kind == "rollout_started"]
    assert started[-1] == {v3.id: 100}, history
    deploys = fleet.store.list_deploys(SERVICE)
    assert all(d.finished and str(d.outcome) == "succeeded" for d in deploys)
    assert fleet.lb.max_out_of_service <= 3
    assert fleet.lb.inner.registered() == set(fleet.ids)
    now = fleet.clock.now()
    alive = {p.owner for p in processes if not p.dead}
    for lease in fleet.locks.holders("scheduler"):
        assert lease.owner in alive or lease.expires_at <= now, lease
    fleet.shut_down()
