"""Step plans, bakes, promotions, the progress deadline and the failure action, driven
through real scheduler passes on the memory store and a fake clock (`scheduler.steps`,
`scheduler.gates`, `scheduler.failures`): each rule is what a pass then writes."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.engine.clock import FakeClock
from flotilla.engine.records import (
    FailureAction,
    Promotion,
    RolloutPolicy,
    RolloutStatus,
    RolloutStep,
    Service,
)
from flotilla.engine.updates import modify_service, set_weights
from flotilla.scheduler.pass_ import PassReport, PassSettings, SchedulerPass
from flotilla.scheduler.rollout import plan_service
from tests.support.scheduler_world import V1, V2, FakeAgents, heartbeat, register

TTL = timedelta(minutes=5)
THREE_STEPS = (RolloutStep("1", 60), RolloutStep("50%", 120), RolloutStep("100%", 0))


class World:
    def __init__(self, policy: RolloutPolicy, instances: int = 4) -> None:
        self.clock = FakeClock()
        self.store = MemoryStateStore(self.clock)
        self.store.create_service(Service(name="api", rollout=policy, weights={V1: 100}))
        register(self.store, self.clock, "api", instances)
        self.agents = FakeAgents(self.store, self.clock, "api", ttl=TTL)
        self.passes = self.new_leader()
        for _ in range(10):
            self.run()
            self.agents.settle()
        assert self.service().rollout_state.status is RolloutStatus.COMPLETE

    def new_leader(self) -> SchedulerPass:
        return SchedulerPass(self.store, self.clock, PassSettings(instance_ttl=TTL), lambda: 1)

    def run(self) -> PassReport:
        """One pass, the agents alive (they heartbeat whatever the clock did)."""
        heartbeat(self.store, self.clock, [i.id for i in self.store.list_instances("api")])
        report = self.passes.run()
        self.clock.advance(1)
        return report

    def service(self) -> Service:
        return self.store.get_service("api")

    def on(self, revision: str) -> int:
        return sum(1 for i in self.store.list_instances("api") if i.current_revision == revision)

    def assigned(self, revision: str) -> int:
        return sum(1 for i in self.store.list_instances("api") if i.assigned_revision == revision)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.service().history]

    def promote(self, *, full: bool = False) -> None:
        def change(service: Service) -> Service:
            number = 1 if service.promotion is None else service.promotion.number + 1
            promotion = Promotion(number, full, self.clock.now(), "alice")
            return dataclasses.replace(service, promotion=promotion)

        modify_service(self.store, "api", change)


def stepped(**policy: object) -> RolloutPolicy:
    return RolloutPolicy(max_in_flight="100%", steps=THREE_STEPS, **policy)  # type: ignore[arg-type]


def test_a_three_step_plan_moves_one_then_half_then_all_baking_between_steps() -> None:
    world = World(stepped())
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.run()
    assert world.assigned(V2) == 1  # step 1: one instance
    world.agents.settle()
    for _ in range(30):  # the bake of step 1 (60 s) holds step 2 back
        report = world.run()
        assert world.assigned(V2) == 1
    assert report.wake_at["api"] == world.service().rollout_state.baking_since + timedelta(
        seconds=60
    )
    world.clock.advance(30)
    world.run()
    assert world.assigned(V2) == 2  # step 2: 50 % of the 4 moves
    world.agents.settle()
    world.run()
    world.clock.advance(110)
    world.run()
    assert world.assigned(V2) == 2  # still baking step 2 (120 s)
    world.clock.advance(10)
    world.run()
    assert world.assigned(V2) == 4
    world.agents.settle()
    world.run()
    assert world.service().rollout_state.status is RolloutStatus.COMPLETE
    reasons = [e.reason for e in world.service().history if e.kind == "step_reached"][-3:]
    assert reasons == [
        "step 1 of 3 (1, bake 60 s)",
        "step 2 of 3 (50%, bake 120 s)",
        "step 3 of 3 (100%)",
    ]
    assert world.kinds()[-1] == "rollout_complete"


def test_a_promotion_skips_the_current_bake_and_full_jumps_to_the_end() -> None:
    world = World(stepped())
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.run()
    world.agents.settle()
    world.run()  # step 1 is done: it bakes
    assert world.service().rollout_state.baking_since is not None
    world.promote()
    world.run()
    assert world.assigned(V2) == 2  # step 2 began without waiting out the bake
    world.agents.settle()
    world.run()
    world.promote(full=True)
    world.run()
    assert world.assigned(V2) == 4
    assert "promoted to the end by alice" in world.service().history[-1].reason


def test_a_pause_step_waits_for_a_promotion_and_says_so() -> None:
    world = World(
        RolloutPolicy(
            max_in_flight="100%", steps=(RolloutStep("1"), RolloutStep(None), RolloutStep("100%"))
        )
    )
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.run()
    world.agents.settle()
    for _ in range(5):
        world.run()
    assert world.assigned(V2) == 1
    plan = plan_service(world.passes._inputs(world.service()), fence_lock="x", fence=1)
    assert [w.kind for w in plan.waits] == ["pause_step"]
    assert "flotilla rollout promote api" in plan.waits[0].text
    world.promote()
    world.run()
    world.run()
    assert world.assigned(V2) == 4


def test_the_bake_start_and_step_are_stored_so_a_new_leader_carries_on() -> None:
    world = World(stepped())
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.run()
    world.agents.settle()
    world.run()
    baking_since = world.service().rollout_state.baking_since
    assert baking_since is not None
    world.passes = world.new_leader()  # the leader died: a new one knows nothing
    world.clock.advance(30)
    world.run()
    assert world.service().rollout_state.baking_since == baking_since
    assert world.assigned(V2) == 1
    world.clock.advance(30)
    world.run()
    assert world.assigned(V2) == 2


@pytest.mark.parametrize("action", list(FailureAction))
def test_a_deadline_with_no_deploy_finishing_runs_the_failure_action(
    action: FailureAction,
) -> None:
    world = World(
        RolloutPolicy(max_in_flight="1", progress_deadline_seconds=300, failure_action=action)
    )
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.run()
    world.agents.start()  # the deploy hangs
    world.clock.advance(290)
    world.run()
    assert world.service().rollout_state.status is RolloutStatus.ROLLING
    world.clock.advance(20)
    world.run()
    service = world.service()
    stopped = next(e for e in service.history if e.kind == "rollout_stopped")
    assert "progress deadline of 300 s" in stopped.reason
    assert "still deploying: i-000" in stopped.reason
    if action is FailureAction.HOLD:
        assert service.rollout_state.status is RolloutStatus.HELD
        assert service.paused
        assert service.weights == {V1: 0, V2: 100}
    else:
        assert world.kinds()[-1] == "reverted"
        assert service.weights == {V1: 100}


def test_a_revert_is_fast_no_steps_no_bake_at_its_own_pace() -> None:
    policy = stepped(max_failures=1, revert_max_in_flight="100%")
    policy = dataclasses.replace(policy, steps=(RolloutStep("2", 600), RolloutStep("100%")))
    world = World(policy)
    world.agents.fails = lambda d: d.to_revision == V2 and d.instance_id == "i-001"
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.run()
    assert world.assigned(V2) == 2
    world.agents.settle()  # i-000 moves, i-001 fails: the budget is spent
    world.run()
    assert world.kinds()[-1] == "reverted"
    assert world.service().rollout_state.fast
    world.run()
    world.agents.settle()
    world.run()
    assert world.on(V1) == 4  # at once, although the plan's first step bakes 600 s
    assert world.service().rollout_state.status is RolloutStatus.COMPLETE


def test_resuming_a_hold_counts_failures_afresh() -> None:
    world = World(
        RolloutPolicy(max_in_flight="1", max_failures=1, failure_action=FailureAction.HOLD)
    )
    world.agents.fails = lambda d: d.instance_id == "i-000"
    set_weights(world.store, "api", {V1: 0, V2: 100})
    for _ in range(3):
        world.run()
        world.agents.settle()
    assert world.service().rollout_state.status is RolloutStatus.HELD
    modify_service(world.store, "api", lambda s: dataclasses.replace(s, paused=False))
    world.agents.fails = lambda _d: False
    for _ in range(8):
        world.run()
        world.agents.settle()
    service = world.service()
    assert service.rollout_state.status is RolloutStatus.COMPLETE
    assert world.on(V2) == 3  # i-000 failed in this rollout and is not retried by it


def test_an_instance_joining_mid_rollout_gets_its_apportioned_revision_at_once() -> None:
    world = World(stepped())
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.run()
    before = world.agents.deploys[V1]
    register(world.store, world.clock, "api", 1, prefix="new")
    world.run()
    joined = world.store.get_instance("api", "new-000")
    assert joined.assigned_revision == V2  # not V1 first, whatever the step
    world.agents.settle()
    assert world.agents.deploys[V1] == before


def test_a_first_deploy_with_steps_and_bakes_waits_at_no_step() -> None:
    world = World(RolloutPolicy(max_in_flight="1", steps=(RolloutStep("100%", 600),)))
    service = world.service()  # World's start-up rolled V1 out one instance at a time
    assert world.on(V1) == 4
    assert service.rollout_state.baking_since is None
    assert world.kinds()[-1] == "rollout_complete"


def test_each_decision_of_a_step_plan_is_a_span_with_its_step(spans: Any) -> None:
    world = World(stepped())
    spans.clear()
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.run()
    world.agents.settle()
    world.run()
    world.promote()
    world.run()
    decisions = [
        (s.attributes["flotilla.decision"], s.attributes["flotilla.step"])
        for s in spans.get_finished_spans()
        if s.name == "scheduler.decision"
    ]
    assert decisions == [("rollout_started", 1), ("step_reached", 1), ("step_reached", 2)]
    reasons = [
        s.attributes["flotilla.reason"]
        for s in spans.get_finished_spans()
        if s.name == "scheduler.decision"
    ]
    assert reasons[-1] == "step 2 of 3 (50%, bake 120 s)"
