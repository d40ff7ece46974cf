"""Scheduler passes on the in-memory store with a fake clock: pacing, liveness, pause,
the failure budget and revert, no needless writes."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import LockLostError
from flotilla.engine.ports import StateStore
from flotilla.engine.records import FailureAction, RolloutState, RolloutStatus, deploy_id_for
from flotilla.engine.updates import modify_service, set_weights
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from tests.support.scheduler_world import (
    V1,
    V2,
    V3,
    CountingStore,
    FakeAgents,
    heartbeat,
    make_service,
    register,
)

TTL = timedelta(minutes=5)
HOLD = FailureAction.HOLD


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.memory = MemoryStateStore(self.clock)
        self.store = CountingStore(self.memory)
        self.token = 1
        self.passes = SchedulerPass(
            self.store,  # type: ignore[arg-type]
            self.clock,
            PassSettings(instance_ttl=TTL),
            guard=lambda: self.token,
        )

    def run(self) -> None:
        self.passes.run()
        self.clock.advance(1)

    def converge(self, agents: FakeAgents, rounds: int = 60) -> None:
        for _ in range(rounds):
            self.run()
            agents.settle()
        self.run()

    def assigned(self, service: str = "api") -> dict[str, str | None]:
        return {i.id: i.assigned_revision for i in self.memory.list_instances(service)}

    def current(self, service: str = "api") -> dict[str, str | None]:
        return {i.id: i.current_revision for i in self.memory.list_instances(service)}


@pytest.fixture
def world() -> World:
    return World()


def in_flight(store: StateStore, service: str) -> int:
    """Instances deploying or waiting to: the rule, written independently of the scheduler."""
    deploys = {d.id: d for d in store.list_deploys(service)}
    running = {d.instance_id for d in deploys.values() if not d.finished}
    count = 0
    for instance in store.list_instances(service):
        own = deploys.get(deploy_id_for(instance))
        failed = own is not None and own.outcome in (Outcome.ROLLED_BACK, Outcome.FAILED)
        moving = instance.assigned_revision not in (None, instance.current_revision)
        if instance.id in running or (moving and not failed):
            count += 1
    return count


def test_a_first_pass_assigns_by_weight_and_a_converged_rollout_completes(world: World) -> None:
    make_service(world.memory, weights={V1: 75, V2: 25}, max_in_flight="100%")
    register(world.memory, world.clock, "api", 4)
    agents = FakeAgents(world.memory, world.clock, "api")
    world.converge(agents, rounds=2)
    assert sorted(world.assigned().values()) == [V1, V1, V1, V2]
    assert world.current() == world.assigned()
    state = world.memory.get_service("api").rollout_state
    assert state.status is RolloutStatus.COMPLETE
    assert state.previous_weights == {V1: 75, V2: 25}
    assert state.watch_since is None
    kinds = [e.kind for e in world.memory.get_service("api").history]
    assert kinds == ["rollout_started", "rollout_complete"]


def test_a_pass_over_unchanged_inputs_writes_nothing_and_reads_no_deploys(world: World) -> None:
    make_service(world.memory, max_in_flight="100%")
    make_service(world.memory, "web", weights={V1: 50, V2: 50}, max_in_flight="100%")
    register(world.memory, world.clock, "api", 5)
    register(world.memory, world.clock, "web", 4, prefix="w")
    world.converge(FakeAgents(world.memory, world.clock, "api"), rounds=2)
    world.converge(FakeAgents(world.memory, world.clock, "web"), rounds=2)
    world.store.reset()
    for _ in range(3):
        world.run()
    assert world.store.writes == 0
    # Quiet services are not read again until an instance could have gone silent.
    assert dict(world.store.calls) == {"list_services": 3}


@settings(max_examples=40, deadline=None)
@given(
    instances=st.integers(min_value=1, max_value=12),
    max_in_flight=st.sampled_from(["1", "2", "3", "25%", "50%"]),
    finishes=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=40),
)
def test_pacing_never_lets_more_than_max_in_flight_deploy(
    instances: int, max_in_flight: str, finishes: list[int]
) -> None:
    world = World()
    service = make_service(world.memory, max_in_flight=max_in_flight)
    register(world.memory, world.clock, "api", instances)
    agents = FakeAgents(world.memory, world.clock, "api")
    world.converge(agents, rounds=instances + 2)
    set_weights(world.memory, "api", {V1: 0, V2: 100})
    slots = service.rollout.slots(instances)
    for finish in [*finishes, *[None] * (instances + 2)]:  # then let every deploy end
        world.run()
        assert in_flight(world.memory, "api") <= slots
        agents.start()
        assert in_flight(world.memory, "api") <= slots
        agents.finish(limit=finish)
    world.run()
    assert set(world.current().values()) == {V2}
    assert agents.max_in_flight_seen <= slots
    assert world.memory.get_service("api").rollout_state.status is RolloutStatus.COMPLETE


def test_moves_that_need_no_deploy_take_no_slot(world: World) -> None:
    """A revert puts failed instances back on the revision they run, all at once."""
    make_service(world.memory, max_in_flight="1", max_failures=3)
    register(world.memory, world.clock, "api", 6)
    agents = FakeAgents(world.memory, world.clock, "api", fails=lambda d: d.to_revision == V2)
    world.converge(agents, rounds=8)
    set_weights(world.memory, "api", {V1: 0, V2: 100})
    for _ in range(2):  # two instances fail on v2, one after the other
        world.run()
        agents.settle()
    assert sum(1 for r in world.assigned().values() if r == V2) == 2
    set_weights(world.memory, "api", {V1: 100, V2: 0})
    world.store.reset()
    world.run()
    assert world.store.calls["set_assignment"] == 2  # both back on v1 in one pass
    assert set(world.assigned().values()) == {V1}


def test_dead_instances_lose_their_assignment_and_the_rest_are_reapportioned(
    world: World,
) -> None:
    make_service(world.memory, weights={V1: 50, V2: 50}, max_in_flight="100%")
    register(world.memory, world.clock, "api", 4)
    agents = FakeAgents(world.memory, world.clock, "api")
    world.converge(agents, rounds=2)
    assert world.assigned() == {"i-000": V1, "i-001": V1, "i-002": V2, "i-003": V2}
    world.clock.advance(TTL.total_seconds() - 10)
    heartbeat(world.memory, world.clock, ["i-000", "i-001", "i-003"])  # i-002 went quiet
    world.clock.advance(20)
    world.converge(agents, rounds=2)
    # Three live instances at 50/50: 1.5 each; the tie goes to the smaller revision id.
    assert world.assigned() == {"i-000": V1, "i-001": V1, "i-002": None, "i-003": V2}


def test_a_paused_service_moves_nothing_until_resumed(world: World) -> None:
    make_service(world.memory, max_in_flight="100%")
    register(world.memory, world.clock, "api", 3)
    agents = FakeAgents(world.memory, world.clock, "api")
    world.converge(agents, rounds=2)
    modify_service(world.memory, "api", lambda s: dataclasses.replace(s, paused=True))
    set_weights(world.memory, "api", {V1: 0, V2: 100})
    world.store.reset()
    for _ in range(3):
        world.run()
        agents.settle()
    assert world.store.writes == 0
    assert set(world.assigned().values()) == {V1}
    modify_service(world.memory, "api", lambda s: dataclasses.replace(s, paused=False))
    world.converge(agents, rounds=2)
    assert set(world.current().values()) == {V2}


def test_the_failure_budget_stops_the_rollout_and_reverts_to_the_last_good_weights(
    world: World,
) -> None:
    make_service(world.memory, max_in_flight="1", max_failures=2)
    register(world.memory, world.clock, "api", 5)
    agents = FakeAgents(world.memory, world.clock, "api", fails=lambda d: d.to_revision == V2)
    world.converge(agents, rounds=7)
    set_weights(world.memory, "api", {V1: 0, V2: 100})
    world.converge(agents, rounds=10)
    service = world.memory.get_service("api")
    assert agents.deploys[V2] == 2  # nothing more was moved to v2 after the second failure
    assert service.weights == {V1: 100}
    assert set(world.assigned().values()) == {V1}
    assert set(world.current().values()) == {V1}
    kinds = [e.kind for e in service.history]
    assert kinds == [
        "rollout_started",
        "rollout_complete",
        "rollout_started",
        "rollout_stopped",
        "reverted",  # which begins the rollout back to v1
        "rollout_complete",
    ]
    stopped = next(e for e in service.history if e.kind == "rollout_stopped")
    assert "2 deploy(s) of revision 222222222222 failed (max_failures 2)" in stopped.reason
    assert "exited with status 1" in stopped.reason
    assert service.rollout_state.status is RolloutStatus.COMPLETE


def test_the_hold_action_pauses_the_service_with_what_runs_and_says_why(world: World) -> None:
    make_service(world.memory, max_in_flight="2", max_failures=2, failure_action=HOLD)
    register(world.memory, world.clock, "api", 6)
    agents = FakeAgents(world.memory, world.clock, "api", fails=lambda d: d.to_revision == V2)
    world.converge(agents, rounds=5)
    set_weights(world.memory, "api", {V1: 0, V2: 100})
    world.converge(agents, rounds=6)
    service = world.memory.get_service("api")
    assert service.rollout_state.status is RolloutStatus.HELD
    assert service.paused
    assert "max_failures 2" in (service.rollout_state.reason or "")
    assert [e.kind for e in service.history][-2:] == ["rollout_stopped", "held"]
    assert "flotilla rollout resume api" in service.history[-1].reason
    assert service.weights == {V1: 0, V2: 100}
    assert agents.deploys[V2] == 2
    assert set(world.current().values()) == {V1}
    # Only the two that failed keep v2 assigned (a failed deploy is not tried again).
    assert sorted(world.assigned().values()).count(V2) == 2
    world.store.reset()
    world.run()
    assert world.store.writes == 0  # a held rollout stays put


def test_a_revert_without_last_good_weights_stops_the_rollout(world: World) -> None:
    make_service(world.memory, weights={V2: 100}, max_in_flight="1")
    register(world.memory, world.clock, "api", 3)
    agents = FakeAgents(world.memory, world.clock, "api", fails=lambda _d: True)
    world.converge(agents, rounds=4)
    state = world.memory.get_service("api").rollout_state
    assert state.status is RolloutStatus.STOPPED
    assert "not reverted: no rollout has completed without failures yet" in (state.reason or "")
    assert agents.deploys[V2] == 1


def test_a_revert_never_overwrites_a_weight_change_made_during_the_pass(world: World) -> None:
    make_service(world.memory, max_in_flight="1", max_failures=1)
    register(world.memory, world.clock, "api", 3)
    agents = FakeAgents(world.memory, world.clock, "api", fails=lambda d: d.to_revision == V2)
    world.converge(agents, rounds=4)
    set_weights(world.memory, "api", {V1: 0, V2: 100})
    world.run()
    agents.settle()  # the first v2 deploy fails: the next pass plans a revert

    def operator_changes_weights(*_args: object) -> None:
        world.store.before.pop("update_service")
        set_weights(world.memory, "api", {V2: 0, V3: 100})

    world.store.before["update_service"] = operator_changes_weights
    world.run()
    service = world.memory.get_service("api")
    assert service.weights == {V1: 0, V2: 0, V3: 100}  # the operator's change stands
    assert service.rollout_state.weights == {V1: 0, V2: 0, V3: 100}
    assert "reverted" not in [e.kind for e in service.history]


# Weight changes landing mid-pass, on every store: tests/contract/test_scheduler_on_stores.py


def test_a_stale_failure_is_retried_by_a_new_rollout_and_a_failed_instance_holds_no_slot(
    world: World,
) -> None:
    make_service(world.memory, max_in_flight="1", max_failures=3)
    register(world.memory, world.clock, "api", 3)
    first_try: set[str] = set()

    def fails_once(deploy: DeployCheckpoint) -> bool:
        if deploy.to_revision != V2 or deploy.instance_id in first_try:
            return False
        first_try.add(deploy.instance_id)
        return deploy.instance_id == "i-000"

    agents = FakeAgents(world.memory, world.clock, "api", fails=fails_once)
    world.converge(agents, rounds=4)
    set_weights(world.memory, "api", {V1: 0, V2: 100})
    world.converge(agents, rounds=6)  # i-000 failed, yet the others moved on with one slot
    assert world.current() == {"i-000": V1, "i-001": V2, "i-002": V2}
    state = world.memory.get_service("api").rollout_state
    assert state.status is RolloutStatus.COMPLETE
    assert state.previous_weights == {V1: 100}  # not a clean rollout: not a revert target
    set_weights(world.memory, "api", {V3: 0})  # any new rollout gives i-000 another try
    world.converge(agents, rounds=3)
    assert world.current() == {"i-000": V2, "i-001": V2, "i-002": V2}


def test_a_newer_leaders_fence_on_the_record_stops_an_old_leader(world: World) -> None:
    make_service(world.memory)
    register(world.memory, world.clock, "api", 1)
    modify_service(
        world.memory,
        "api",
        lambda s: dataclasses.replace(
            s, rollout_state=RolloutState(weights={V3: 1}, fence_lock="scheduler", fence=9)
        ),
    )
    world.token = 4
    world.store.reset()
    with pytest.raises(LockLostError, match="newer leader"):
        world.passes.run()
    assert world.store.writes == 0


def test_a_lost_lease_aborts_the_pass_before_any_further_write(world: World) -> None:
    make_service(world.memory, max_in_flight="100%")
    register(world.memory, world.clock, "api", 6)
    calls = 0

    def guard() -> int:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise LockLostError("lease lapsed")
        return 1

    world.passes.guard = guard
    with pytest.raises(LockLostError):
        world.passes.run()
    # guard #1 fenced the plan, #2 preceded the record write, #3 the first assignment.
    assert world.store.calls["set_assignment"] == 1
    assert world.store.calls["update_service"] == 1


def test_a_pass_over_named_services_reads_only_those(world: World) -> None:
    make_service(world.memory)
    make_service(world.memory, "web")
    world.store.reset()
    report = world.passes.run({"web", "gone"})
    assert report.services == ["web"]
    assert report.missing == {"gone"}
    assert report.handled("gone")
    assert report.handled("web")
    assert not report.handled("api")
    assert "list_services" not in world.store.calls
