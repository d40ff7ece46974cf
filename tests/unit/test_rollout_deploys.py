"""The scheduler's memory of a rollout's deploys: listed whole once, then only what is new
or still running (tests on the memory store, counting its calls)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome, Transition
from flotilla.engine.clock import FakeClock
from flotilla.engine.records import RolloutState, RolloutStatus, Service
from flotilla.scheduler.rollout_deploys import RolloutDeploys
from testbed.scheduler_world import CountingStore


def rolling(started: FakeClock) -> Service:
    state = RolloutState(
        weights={"b" * 64: 100}, status=RolloutStatus.ROLLING, started_at=started.now()
    )
    return Service("api", rollout_state=state)


def a_deploy(clock: FakeClock, n: int) -> DeployCheckpoint:
    now = clock.now()
    return DeployCheckpoint(
        id=f"i-{n}.1",
        service="api",
        instance_id=f"i-{n}",
        from_revision="a" * 64,
        to_revision="b" * 64,
        state="locking",
        machine_version=1,
        created_at=now,
        updated_at=now,
        history=(Transition("locking", now),),
    )


def test_a_rollout_is_listed_whole_once_then_only_what_is_new_or_still_running() -> None:
    clock = FakeClock()
    memory = MemoryStateStore(clock)
    store = CountingStore(memory)
    service = rolling(clock)
    known = RolloutDeploys(store)  # type: ignore[arg-type]
    clock.advance(1)
    first = [memory.create_deploy(a_deploy(clock, n)) for n in range(3)]
    clock.advance(600)
    assert set(known.of(service, clock.now())) == {d.id for d in first}

    # i-0 finishes; i-3 starts much later: the next pass sees both.
    memory.update_deploy(dataclasses.replace(first[0], state="done", outcome=Outcome.SUCCEEDED))
    clock.advance(600)
    late = memory.create_deploy(a_deploy(clock, 3))
    store.reset()
    seen = known.of(service, clock.now())
    assert seen["i-0.1"].outcome is Outcome.SUCCEEDED
    assert late.id in seen
    # One listing of what is recent (i-3), and a read of each earlier one still running
    # when last seen (i-0, which has finished since, i-1, i-2).
    assert dict(store.calls) == {"list_deploys": 1, "get_deploy": 3}
    store.reset()
    clock.advance(600)
    known.of(service, clock.now())
    # i-3 is still recent enough to be listed; i-1 and i-2 are read.
    assert dict(store.calls) == {"list_deploys": 1, "get_deploy": 2}
    store.reset()
    clock.advance(600)
    memory.update_deploy(dataclasses.replace(late, state="done", outcome=Outcome.SUCCEEDED))
    known.of(service, clock.now())
    known.of(service, clock.now())
    # A finished one is read no more: i-1 and i-2 twice, i-3 (now done) once.
    assert dict(store.calls) == {"list_deploys": 2, "get_deploy": 5}

    # The rollout completes: nothing is kept, nothing is read.
    done = dataclasses.replace(
        service,
        rollout_state=dataclasses.replace(service.rollout_state, status=RolloutStatus.COMPLETE),
    )
    store.reset()
    assert known.of(done, clock.now()) == {}
    assert dict(store.calls) == {}


def test_another_rollout_or_a_new_leader_lists_again() -> None:
    clock = FakeClock()
    memory = MemoryStateStore(clock)
    store = CountingStore(memory)
    known = RolloutDeploys(store)  # type: ignore[arg-type]
    service = rolling(clock)
    memory.create_deploy(a_deploy(clock, 0))
    known.of(service, clock.now())
    clock.advance(timedelta(minutes=5).total_seconds())
    restarted = rolling(clock)  # a new start
    store.reset()
    assert known.of(restarted, clock.now()) == {}  # the old deploy is before its window
    assert dict(store.calls) == {"list_deploys": 1}
    known.forget()
    store.reset()
    known.of(restarted, clock.now())
    assert dict(store.calls) == {"list_deploys": 1}
