"""Events out through real scheduler passes (`scheduler.announce`): every decision and
deploy outcome published once per leader, in order, with labels; one that cannot be
published is tried again at the next pass and never holds the rollout; a new leader
publishes again at most what its predecessor may not have, under the same ids."""

from __future__ import annotations

from datetime import timedelta

from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.adapters.memory_topic import MemoryEventTopic
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import TransientError
from flotilla.engine.records import (
    Revision,
    RolloutPolicy,
    RolloutStatus,
    RolloutStep,
    Service,
)
from flotilla.engine.updates import set_weights
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from tests.support.scheduler_world import V1, V2, FakeAgents, heartbeat, register

TTL = timedelta(minutes=5)


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStateStore(self.clock)
        policy = RolloutPolicy("100%", steps=(RolloutStep("1", 30), RolloutStep("100%")))
        self.store.create_service(Service(name="api", rollout=policy, weights={}))
        for revision, label in ((V1, "blue"), (V2, "green")):
            self.store.put_revision(Revision("api", revision, label, {}, None, self.clock.now()))
        register(self.store, self.clock, "api", 3)
        self.agents = FakeAgents(self.store, self.clock, "api", ttl=TTL)
        self.topic = MemoryEventTopic()
        self.passes = self.new_leader()

    def new_leader(self) -> SchedulerPass:
        settings = PassSettings(instance_ttl=TTL)
        return SchedulerPass(self.store, self.clock, settings, lambda: 1, topic=self.topic)

    def converge(self, rounds: int = 8) -> None:
        for _ in range(rounds):
            heartbeat(self.store, self.clock, [i.id for i in self.store.list_instances("api")])
            self.passes.run()
            self.agents.settle()
            self.clock.advance(20)


def test_a_rollout_publishes_its_decisions_and_deploy_outcomes_once_with_labels() -> None:
    world = World()
    set_weights(world.store, "api", {V1: 100})
    world.converge()
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.converge()
    assert world.store.get_service("api").rollout_state.status is RolloutStatus.COMPLETE
    kinds = world.topic.kinds()
    assert kinds.count("deploy_succeeded") == 6
    rollout = [k for k in kinds if not k.startswith("deploy_")]
    assert rollout == [
        "rollout_started", "step_reached", "step_reached", "rollout_complete",
        "rollout_started", "step_reached", "step_reached", "rollout_complete",
    ]  # fmt: skip
    ids = [n.id for n in world.topic.notices]
    assert len(ids) == len(set(ids))
    last = world.topic.notices[-1]
    assert last.labels == {V1: "blue", V2: "green"}
    step = next(n for n in world.topic.notices[::-1] if n.kind == "step_reached")
    assert step.step == {"index": 2, "of": 2}
    times = [n.at for n in world.topic.notices]
    assert times == sorted(times)


def test_a_topic_that_fails_holds_no_rollout_and_gets_the_events_later_in_order() -> None:
    world = World()
    world.topic.fail_with(TransientError("SNS is down"))
    set_weights(world.store, "api", {V1: 100})
    world.converge()
    assert world.store.get_service("api").rollout_state.status is RolloutStatus.COMPLETE
    assert world.topic.notices == []
    world.topic.fail_with(None)
    world.converge(rounds=1)
    kinds = world.topic.kinds()
    assert kinds[0] == "rollout_started"
    assert kinds[-1] == "rollout_complete"
    assert kinds.count("deploy_succeeded") == 3


def test_a_new_leader_publishes_again_only_under_the_same_ids() -> None:
    world = World()
    set_weights(world.store, "api", {V1: 100})
    world.converge()
    first = {n.id for n in world.topic.notices}
    world.passes = world.new_leader()
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.converge()
    ids = [n.id for n in world.topic.notices]
    repeated = [i for i in ids[len(first) :] if i in first]
    assert repeated  # the new leader starts a minute back: some events come again...
    assert len(ids) - len(repeated) == len(set(ids))  # ...and only under the same ids
    kinds = [n.kind for n in world.topic.notices if n.id not in first]
    assert kinds[0] == "rollout_started"
    assert kinds[-1] == "rollout_complete"
