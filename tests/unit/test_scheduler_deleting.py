"""Deleting a service on the in-memory store with a fake clock: every instance is assigned
none, the agents' unassignments are waited for (and counted as in flight), and the record
goes (conditionally) once nothing runs; a failed unassignment holds it until its instance
is dead. Also: a service being deleted cannot be changed, and an unassignment counts as in
flight in any rollout (weights all 0) until it finishes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.adapters.memory_topic import MemoryEventTopic
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import BeingDeletedError, NotFoundError
from flotilla.engine.records import RolloutStatus
from flotilla.engine.updates import mark_deleting, modify_service, set_weights
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from flotilla.scheduler.phases import Phase, phase_of, running_deploys
from flotilla.scheduler.rollout import ServiceInputs, plan_service
from flotilla.scheduler.waits import DEPLOYS, FAILED_UNASSIGNMENTS
from tests.support.scheduler_world import V1, V2, FakeAgents, heartbeat, make_service, register

TTL = timedelta(minutes=5)


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStateStore(self.clock)
        self.topic = MemoryEventTopic()
        self.passes = SchedulerPass(
            self.store, self.clock, PassSettings(instance_ttl=TTL), guard=lambda: 1,
            topic=self.topic,
        )  # fmt: skip

    def run(self) -> None:
        self.passes.run()
        self.clock.advance(1)

    def running(self, count: int, **options: object) -> FakeAgents:
        """`count` instances of `api` that run V1 (a complete rollout)."""
        make_service(self.store, weights={V1: 100}, max_in_flight="100%", **options)  # type: ignore[arg-type]
        register(self.store, self.clock, "api", count)
        agents = FakeAgents(self.store, self.clock, "api")
        for _ in range(3):
            self.run()
            agents.settle()
        self.run()
        assert {i.current_revision for i in self.store.list_instances("api")} == {V1}
        return agents

    def delete(self) -> None:
        mark_deleting(self.store, "api", self.clock.now(), current=self.store.get_service("api"))

    def plan(self):  # type: ignore[no-untyped-def]
        service = self.store.get_service("api")
        live = self.store.list_instances("api")
        deploys = {d.id: d for d in self.store.list_deploys("api")}
        return plan_service(
            ServiceInputs(service, live, (), deploys, self.clock.now()), fence_lock="s", fence=1
        )

    def kinds(self) -> list[str]:
        return [n.kind for n in self.topic.notices]


def unassigning(instance_id: str) -> Callable[[DeployCheckpoint], bool]:
    """Fails the unassignment deploys of `instance_id`."""
    return lambda deploy: deploy.to_revision is None and deploy.instance_id == instance_id


@pytest.fixture
def world() -> World:
    return World()


def test_a_deleted_service_is_unassigned_then_its_record_goes(world: World) -> None:
    agents = world.running(3)
    world.delete()
    world.run()
    assert {i.assigned_revision for i in world.store.list_instances("api")} == {None}
    plan = world.plan()
    assert (plan.in_flight, plan.deletable) == (3, False)
    assert [w.kind for w in plan.waits] == [DEPLOYS]
    world.run()
    assert world.store.get_service("api").deleting  # the agents have not unassigned yet

    agents.start()
    agents.finish(limit=2)
    world.run()
    assert world.plan().in_flight == 1  # one unassignment still running holds the record
    agents.finish()
    world.passes.run()
    with pytest.raises(NotFoundError):
        world.store.get_service("api")
    assert {i.current_revision for i in world.store.list_instances("api")} == {None}
    assert agents.deploys["none"] == 3
    kinds = world.kinds()
    assert kinds.count("deploy_succeeded") == 6  # three deploys of V1, three unassignments
    assert kinds.index("service_deleting") < kinds.index("service_deleted") == len(kinds) - 1


def test_a_service_whose_instances_run_nothing_goes_at_the_first_pass(world: World) -> None:
    make_service(world.store, weights={V1: 0})
    register(world.store, world.clock, "api", 2)
    world.delete()
    report = world.passes.run()
    assert report.deleted == ["api"]
    assert world.store.list_services() == []
    assert world.kinds()[-1] == "service_deleted"


def test_a_deploy_begun_before_the_deletion_holds_the_record_until_it_is_undone(
    world: World,
) -> None:
    make_service(world.store, weights={V1: 100})
    register(world.store, world.clock, "api", 1)
    agents = FakeAgents(world.store, world.clock, "api")
    world.run()
    agents.start()  # the deploy of V1 runs; the instance runs nothing yet
    world.delete()
    world.run()
    (instance,) = world.store.list_instances("api")
    assert (instance.assigned_revision, instance.current_revision) == (None, None)
    world.run()
    assert world.store.get_service("api").deleting  # its deploy is unfinished
    agents.finish()  # it now runs V1, assigned none: its agent unassigns it
    world.run()
    assert world.store.get_service("api").deleting
    agents.settle()
    world.run()
    assert world.store.list_services() == []
    assert [i.current_revision for i in world.store.list_instances("api")] == [None]


def test_a_failed_unassignment_holds_the_record_until_its_instance_is_dead(world: World) -> None:
    world.running(2)
    agents = FakeAgents(world.store, world.clock, "api", fails=unassigning("i-000"))
    world.delete()
    world.run()
    agents.settle()
    world.run()
    assert world.store.get_service("api").deleting
    plan = world.plan()
    assert (plan.in_flight, plan.deletable) == (0, False)
    assert [w.kind for w in plan.waits] == [FAILED_UNASSIGNMENTS]
    deploys = {d.id: d for d in world.store.list_deploys("api")}
    running = running_deploys(deploys.values())
    phases = {i.id: phase_of(i, deploys, running) for i in world.store.list_instances("api")}
    assert phases == {"i-000": Phase.FAILED, "i-001": Phase.SETTLED}

    world.clock.advance(TTL.total_seconds())  # i-000's agent is gone; i-001's heartbeats
    heartbeat(world.store, world.clock, ["i-001"])
    world.run()
    assert world.store.list_services() == []


def test_a_service_being_deleted_cannot_be_changed_and_stays_as_it_was(world: World) -> None:
    world.running(1)
    world.delete()
    before = world.store.get_service("api")
    with pytest.raises(BeingDeletedError, match="'api' is being deleted"):
        set_weights(world.store, "api", {V2: 100})
    with pytest.raises(BeingDeletedError):
        modify_service(world.store, "api", lambda s: s)
    assert world.store.get_service("api") == before
    # A second mark keeps the first one.
    world.clock.advance(60)
    world.delete()
    assert world.store.get_service("api") == before


def test_weights_all_zero_wait_for_the_unassignments_before_completing(world: World) -> None:
    agents = world.running(2)
    set_weights(world.store, "api", {V1: 0})
    world.run()
    world.run()
    service = world.store.get_service("api")
    assert service.rollout_state.status is RolloutStatus.ROLLING  # nobody unassigned yet
    assert world.plan().in_flight == 2
    agents.settle()
    world.run()
    state = world.store.get_service("api").rollout_state
    assert state.status is RolloutStatus.COMPLETE
    assert world.plan().in_flight == 0


def test_a_failed_unassignment_leaves_a_failed_instance_not_a_clean_rollout(world: World) -> None:
    world.running(2)
    agents = FakeAgents(world.store, world.clock, "api", fails=unassigning("i-001"))
    set_weights(world.store, "api", {V1: 0})
    for _ in range(3):
        world.run()
        agents.settle()
    world.run()
    service = world.store.get_service("api")
    assert service.rollout_state.status is RolloutStatus.COMPLETE
    (complete,) = [e for e in service.history if e.kind == "rollout_complete"][-1:]
    assert "1 instance(s) failed" in complete.reason
    failed = [d for d in world.store.list_deploys("api") if d.outcome is Outcome.ROLLED_BACK]
    assert [d.to_revision for d in failed] == [None]


def test_an_instance_assigned_none_that_runs_nothing_does_not_wait(world: World) -> None:
    make_service(world.store, weights={V1: 0})
    register(world.store, world.clock, "api", 2)
    world.run()
    world.run()
    plan = world.plan()
    assert (plan.in_flight, plan.waiting) == (0, 0)
    assert world.store.get_service("api").rollout_state.status is RolloutStatus.COMPLETE
    assert world.store.list_deploys("api") == []
