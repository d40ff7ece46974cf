"""The scheduler loop on in-memory adapters and a fake clock: leadership, events, failover."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from flotilla.adapters.memory_events import MemoryEventQueue
from flotilla.adapters.memory_locks import MemoryLockService
from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.adapters.memory_wakeups import MemoryWakeUps
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import NotFoundError, TransientError
from flotilla.engine.ports import Event
from flotilla.engine.records import AgentClaim, Instance, RolloutStep
from flotilla.engine.updates import modify_service, set_weights
from flotilla.scheduler.service import Scheduler, SchedulerSettings
from tests.support.scheduler_world import (
    V1,
    V2,
    CountingStore,
    FakeAgents,
    make_service,
    register,
)
from tests.unit.test_items import ec2_notification

LEASE = timedelta(seconds=12)
INTERVAL = timedelta(seconds=60)
VISIBILITY = timedelta(seconds=30)
STEPS = (RolloutStep("1", 20), RolloutStep("100%"))


class Killed(BaseException):
    """A SIGKILL, as far as the scheduler under test can tell."""


class SpyQueue:
    """One scheduler's view of the shared queue, counting its receives."""

    def __init__(self, inner: MemoryEventQueue) -> None:
        self.inner = inner
        self.receives = 0

    def send(self, event: Event) -> None:
        self.inner.send(event)

    def receive(self, *, wait: timedelta, max_events: int = 10) -> list[Event]:
        self.receives += 1
        return self.inner.receive(wait=wait, max_events=max_events)

    def ack(self, *events: Event) -> None:
        self.inner.ack(*events)


class Cluster:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.memory = MemoryStateStore(self.clock)
        self.locks = MemoryLockService(self.clock)
        self.queue = MemoryEventQueue(self.clock, visibility_timeout=VISIBILITY)

    def scheduler(
        self,
        owner: str,
        segment: int = 0,
        segments: int = 1,
        on_ready: Callable[[bool], None] | None = None,
    ) -> Scheduler:
        settings = SchedulerSettings(
            owner=owner, segment=segment, segments=segments, interval=INTERVAL, lease=LEASE
        )
        return Scheduler(
            settings,
            store=CountingStore(self.memory),  # type: ignore[arg-type]
            locks=self.locks,
            events=SpyQueue(self.queue),
            clock=self.clock,
            on_ready=on_ready,
        )

    def assigned(self) -> set[str | None]:
        return {i.assigned_revision for i in self.memory.list_instances("api")}


def spy(scheduler: Scheduler) -> SpyQueue:
    queue = scheduler.events
    assert isinstance(queue, SpyQueue)
    return queue


def counting(scheduler: Scheduler) -> CountingStore:
    store: Any = scheduler.store
    assert isinstance(store, CountingStore)
    return store


@pytest.fixture
def cluster() -> Cluster:
    cluster = Cluster()
    make_service(cluster.memory, max_in_flight="100%")
    register(cluster.memory, cluster.clock, "api", 3)
    return cluster


def test_one_scheduler_leads_and_a_standby_never_receives(cluster: Cluster) -> None:
    a, b = cluster.scheduler("a"), cluster.scheduler("b")
    a.step()
    assert a.leadership.is_leader
    assert cluster.assigned() == {V1}
    received_before = spy(a).receives
    for _ in range(10):
        b.step()
        cluster.queue.send(Event("service_changed", "api"))
        a.step()
    assert not b.leadership.is_leader
    assert spy(b).receives == 0
    # One receive per event: a partial answer needs no look for more.
    assert spy(a).receives == received_before + 10
    assert cluster.queue.pending() == 0  # every event went to the leader


def test_readiness_is_reported_once_when_a_leadership_attempt_first_reaches_the_locks(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports: dict[str, list[tuple[bool, list[str]]]] = {"a": [], "b": []}

    def reporter(owner: str) -> Callable[[bool], None]:
        def ready(leading: bool) -> None:
            holders = [lease.owner for lease in cluster.locks.holders("scheduler")]
            reports[owner].append((leading, holders))

        return ready

    a = cluster.scheduler("a", on_ready=reporter("a"))
    b = cluster.scheduler("b", on_ready=reporter("b"))
    holders = cluster.locks.holders

    def unreachable(name: str) -> object:
        raise TransientError("DynamoDB unreachable (test)")

    monkeypatch.setattr(cluster.locks, "holders", unreachable)
    for _ in range(3):
        a.step()
    assert reports["a"] == []  # never reached the lock service: not ready
    monkeypatch.setattr(cluster.locks, "holders", holders)
    a.step()
    assert reports["a"] == [(True, ["a"])]  # ready once it holds the lease
    for _ in range(3):
        b.step()
        a.step()
    assert reports == {"a": [(True, ["a"])], "b": [(False, ["a"])]}  # a standby is ready too
    cluster.clock.advance(LEASE.total_seconds() + 1)  # a paused past its lease: b takes over
    b.step()
    a.step()
    assert b.leadership.is_leader
    assert reports == {"a": [(True, ["a"])], "b": [(False, ["a"])]}  # still once each


def test_an_event_runs_a_pass_at_once_and_is_acknowledged_after_it(cluster: Cluster) -> None:
    a = cluster.scheduler("a")
    a.step()
    changed_at = cluster.clock.now()
    set_weights(cluster.memory, "api", {V1: 0, V2: 100})
    cluster.queue.send(Event("service_changed", "api"))
    a.step()
    assert cluster.assigned() == {V2}
    assert cluster.clock.now() - changed_at < INTERVAL / 4  # not the timer
    assert cluster.queue.pending() == 0
    assert a.last_report is not None
    assert a.last_report.services == ["api"]  # a pass over the named service only


def test_events_that_piled_up_are_handled_in_one_pass_and_one_event_costs_one_receive(
    cluster: Cluster,
) -> None:
    a = cluster.scheduler("a")
    a.step()
    queue = spy(a)
    for _ in range(25):  # more than one receive returns (SQS's 10)
        cluster.queue.send(Event("deploy_finished", "api"))
    before, passes = queue.receives, counting(a).calls["get_service"]
    a.step()
    assert cluster.queue.pending() == 0
    assert counting(a).calls["get_service"] - passes == 1  # one pass took all 25
    assert queue.receives - before == 3  # 10 + 10 + 5: the partial answer ends it
    cluster.queue.send(Event("deploy_finished", "api"))
    before = queue.receives
    a.step()
    assert cluster.queue.pending() == 0
    assert queue.receives - before == 1  # a partial answer: no second call to find nothing


def test_an_event_whose_pass_failed_comes_back_and_is_handled_later(cluster: Cluster) -> None:
    a = cluster.scheduler("a")
    a.step()
    set_weights(cluster.memory, "api", {V1: 0, V2: 100})

    def unreachable(*_args: object) -> None:
        raise TransientError("DynamoDB is throttling")

    counting(a).before["list_instances"] = unreachable
    cluster.queue.send(Event("service_changed", "api"))
    a.step()
    assert cluster.queue.pending() == 1
    assert cluster.assigned() == {V1}
    del counting(a).before["list_instances"]
    cluster.clock.advance(VISIBILITY.total_seconds())
    for _ in range(3):
        a.step()
    assert cluster.assigned() == {V2}
    assert cluster.queue.pending() == 0


def test_the_timer_runs_a_full_pass_without_events(cluster: Cluster) -> None:
    a = cluster.scheduler("a")
    a.step()
    set_weights(cluster.memory, "api", {V1: 0, V2: 100})
    start = cluster.clock.now()
    while cluster.assigned() != {V2}:
        a.step()
    assert INTERVAL <= cluster.clock.now() - start <= INTERVAL + LEASE / 3


def test_a_dead_leaders_unacknowledged_event_is_handled_by_the_next_leader(
    cluster: Cluster,
) -> None:
    a, b = cluster.scheduler("a"), cluster.scheduler("b")
    a.step()
    set_weights(cluster.memory, "api", {V1: 0, V2: 100})

    def sigkill(*_args: object, **_kwargs: object) -> None:
        raise Killed

    counting(a).before["set_assignment"] = sigkill  # dies mid-pass, event in hand
    cluster.queue.send(Event("service_changed", "api"))
    with pytest.raises(Killed):
        a.step()
    assert cluster.queue.pending() == 1
    died_at = cluster.clock.now()
    while not b.leadership.is_leader:
        b.step()
    assert cluster.clock.now() - died_at <= LEASE + LEASE / 3
    while cluster.queue.pending():
        b.step()
    assert cluster.assigned() == {V2}
    assert cluster.clock.now() - died_at <= VISIBILITY + LEASE


def test_a_leader_that_lost_its_lease_writes_nothing_more(cluster: Cluster) -> None:
    a, b = cluster.scheduler("a"), cluster.scheduler("b")
    a.step()
    cluster.clock.advance(LEASE.total_seconds() + 1)  # a was paused past its lease
    b.step()
    assert b.leadership.is_leader
    set_weights(cluster.memory, "api", {V1: 0, V2: 100})
    counting(a).reset()
    a.step()
    assert not a.leadership.is_leader
    assert counting(a).writes == 0
    assert spy(a).receives == 1  # the receive before it paused, then no more


def test_run_steps_down_on_stop_so_a_standby_takes_over_at_once(cluster: Cluster) -> None:
    a, b = cluster.scheduler("a"), cluster.scheduler("b")
    queue = spy(a)
    receive = queue.receive

    def receive_then_stop(*, wait: timedelta, max_events: int = 10) -> list[Event]:
        if queue.receives == 3:  # SIGTERM arrives while it waits for events
            a.stop.set()
        return receive(wait=wait, max_events=max_events)

    queue.receive = receive_then_stop  # type: ignore[method-assign]
    a.run()
    assert not a.leadership.is_leader
    b.step()
    assert b.leadership.is_leader


def test_shard_leaders_split_services_and_leave_each_others_events(cluster: Cluster) -> None:
    names = [f"svc-{n}" for n in range(8)]
    for name in names:
        make_service(cluster.memory, name, max_in_flight="100%")
    zero, one = cluster.scheduler("z", 0, 2), cluster.scheduler("o", 1, 2)
    zero.step()
    one.step()
    assert zero.leadership.is_leader
    assert one.leadership.is_leader
    assert zero.last_report is not None
    assert one.last_report is not None
    mine, theirs = set(zero.last_report.services), set(one.last_report.services)
    assert not mine & theirs
    assert mine | theirs == {*names, "api"}
    foreign = sorted(theirs)[0]
    cluster.queue.send(Event("service_changed", foreign))
    cluster.queue.send(Event("service_changed", "no-such-service"))
    zero.step()
    assert cluster.queue.pending() == 1  # the unknown service's event was acknowledged
    # Both keep stepping (and so keep their leases) until the foreign event, visible again
    # after its timeout, reaches the leader of its shard.
    deadline = cluster.clock.now() + VISIBILITY + LEASE
    while cluster.queue.pending() and cluster.clock.now() < deadline:
        zero.step()
        one.step()
    assert cluster.queue.pending() == 0
    assert zero.leadership.is_leader
    assert one.leadership.is_leader


def test_settings_refuse_a_segment_outside_the_shards() -> None:
    with pytest.raises(ValueError, match="segment 2 of 2"):
        SchedulerSettings(owner="x", segment=2, segments=2)


def test_ec2_saying_a_machine_goes_takes_its_instance_out_at_once(cluster: Cluster) -> None:
    """Within the step that receives the notification, long before the instance TTL: its
    assignment goes, its wake-up queue is closed, the others keep theirs."""
    wakeups = MemoryWakeUps(cluster.clock)
    for instance in cluster.memory.list_instances("api"):
        address = wakeups.open(instance.id)
        cluster.memory.record_heartbeat(
            "api",
            instance.id,
            cluster.clock.now(),
            cluster.clock.now() + timedelta(hours=1),
        )
        cluster.memory.register_instance(
            instance,
            expires_at=cluster.clock.now() + timedelta(hours=1),
            claim=AgentClaim(
                f"agent-{instance.id}", cluster.clock.now() + LEASE, wake_address=address
            ),
        )
    scheduler = Scheduler(
        SchedulerSettings(owner="a", interval=INTERVAL, lease=LEASE),
        store=cluster.memory,
        locks=cluster.locks,
        events=cluster.queue,
        clock=cluster.clock,
        wakeups=wakeups,
    )
    scheduler.step()
    assert cluster.assigned() == {V1}
    cluster.queue.deliver(ec2_notification("terminated", "i-001"))
    cluster.queue.deliver(ec2_notification("running", "i-002"))  # not leaving: no change
    cluster.queue.deliver(ec2_notification("terminated", "i-0notours"))  # not Flotilla's
    scheduler.step()
    gone = cluster.memory.get_instance("api", "i-001")
    assert gone.left_at is not None
    assert gone.assigned_revision is None
    assert {i.id: i.assigned_revision for i in cluster.memory.list_instances("api")} == {
        "i-000": V1,
        "i-001": None,
        "i-002": V1,
    }
    assert gone.wake_address is not None
    with pytest.raises(NotFoundError):  # its wake-up queue was closed
        wakeups.ring(gone.wake_address)
    assert cluster.queue.pending() == 0  # all three acknowledged

    # The machine is started again (a new boot: its old agent is proven dead): the new
    # agent takes the instance, which is back.
    now = cluster.clock.now()
    back = cluster.memory.register_instance(
        Instance("i-001", "api", "test", now, now),
        expires_at=now + timedelta(hours=1),
        claim=AgentClaim("agent-again", now + LEASE, replacing="agent-i-001"),
    )
    assert back.left_at is None


def test_a_bake_that_ends_between_full_passes_is_planned_at_its_end() -> None:
    cluster = Cluster()
    make_service(cluster.memory, max_in_flight="100%")
    modify_service(
        cluster.memory,
        "api",
        lambda s: dataclasses.replace(
            s, rollout=dataclasses.replace(s.rollout, steps=STEPS, progress_deadline_seconds=0)
        ),
    )
    register(cluster.memory, cluster.clock, "api", 3)
    agents = FakeAgents(cluster.memory, cluster.clock, "api", ttl=timedelta(hours=1))
    leader = cluster.scheduler("a")
    leader.step()
    agents.settle()
    set_weights(cluster.memory, "api", {V1: 0, V2: 100})
    cluster.queue.send(Event("service_changed", "api"))
    leader.step()
    agents.settle()  # step 1's one instance is done
    cluster.queue.send(Event("deploy_finished", "api"))
    leader.step()  # the bake begins: 20 s
    started = cluster.memory.get_service("api").rollout_state.baking_since
    assert started is not None
    assert sum(1 for i in cluster.memory.list_instances("api") if i.assigned_revision == V2) == 1
    while cluster.clock.now() < started + timedelta(seconds=20):
        leader.step()  # no event comes: the leader sleeps until the bake's end
    leader.step()
    assert cluster.clock.now() < started + INTERVAL  # before the next full pass was due
    assert cluster.assigned() == {V2}
