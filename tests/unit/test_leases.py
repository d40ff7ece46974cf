"""The one lease rule (engine/leases.py) and the three holders that use it: a deploy's
slot, an agent's own lease, and the scheduler's leadership."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from flotilla.adapters.memory_locks import MemoryLockService
from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.cli.agent_assembly import AgentAdapters, build_agent
from flotilla.engine.clock import FakeClock
from flotilla.engine.deploy.agent import AgentSettings
from flotilla.engine.deploy.runner import Liveness
from flotilla.engine.errors import LockLostError, TransientError
from flotilla.engine.leases import LeaseKeeper
from flotilla.engine.records import AgentClaim, Instance, Lease
from flotilla.scheduler.leader import Leadership

LEASE = timedelta(seconds=12)


class CountingLocks(MemoryLockService):
    """Counts renewals; renewals fail as if DynamoDB were unreachable while `down`."""

    down = False
    renewals = 0

    def renew(self, lease: Lease, *, duration: timedelta) -> Lease:
        if self.down:
            raise TransientError("DynamoDB unreachable")
        self.renewals += 1
        return super().renew(lease, duration=duration)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def locks(clock: FakeClock) -> CountingLocks:
    return CountingLocks(clock)


def keeper(locks: CountingLocks, clock: FakeClock, owner: str = "a") -> LeaseKeeper:
    return LeaseKeeper(locks, clock, name="lock", owner=owner, duration=LEASE)


def test_a_lease_is_renewed_once_a_third_has_passed_and_not_before(
    locks: CountingLocks, clock: FakeClock
) -> None:
    held = keeper(locks, clock)
    assert held.acquire()
    clock.advance(3.9)
    held.keep()
    assert locks.renewals == 0
    clock.advance(0.1)  # a third of 12 s
    held.keep()
    assert locks.renewals == 1
    assert held.lease is not None
    assert held.lease.expires_at == clock.now() + LEASE
    assert held.seconds_until_renewal() == pytest.approx(4.0)


def test_looking_in_every_two_thirds_of_a_lease_never_lets_it_lapse(
    locks: CountingLocks, clock: FakeClock
) -> None:
    held = keeper(locks, clock)
    assert held.acquire()
    for _ in range(20):
        clock.advance(LEASE.total_seconds() * 2 / 3 - 0.01)
        held.keep()
        assert held.held
        assert keeper(locks, clock, "intruder").acquire() is False


def test_an_outage_is_ridden_out_until_the_margin_then_the_lease_counts_as_lost(
    locks: CountingLocks, clock: FakeClock
) -> None:
    held = keeper(locks, clock)
    assert held.acquire()
    locks.down = True
    clock.advance(6)
    held.keep()
    assert held.held
    assert not held.lost
    assert held.guard() >= 1
    clock.advance(3.5)  # 2.5 s left: under a quarter
    held.keep()
    assert not held.held
    assert held.lost_reason is not None
    assert "could not renew lock before it ran out" in held.lost_reason
    with pytest.raises(LockLostError):
        held.guard()


def test_a_lease_taken_over_is_lost_at_the_next_renewal(
    locks: CountingLocks, clock: FakeClock
) -> None:
    held = keeper(locks, clock)
    assert held.acquire()
    clock.advance(13)  # lapsed
    assert keeper(locks, clock, "b").acquire()
    held.keep()
    assert held.lost
    assert not held.held
    assert held.acquire() is False  # b holds it now
    assert held.lost, "still lost until it takes the lease again"


def test_guard_refuses_near_expiry_even_while_renewal_is_not_yet_due(
    locks: CountingLocks, clock: FakeClock
) -> None:
    short = LeaseKeeper(locks, clock, name="lock", owner="a", duration=LEASE)
    assert short.acquire()
    locks.down = True
    clock.advance(9.5)
    with pytest.raises(LockLostError, match="ran out"):
        short.guard()
    assert not short.held


def test_release_frees_the_slot_and_adopt_takes_up_a_lease_of_the_same_owner(
    locks: CountingLocks, clock: FakeClock
) -> None:
    first = keeper(locks, clock)
    assert first.acquire()
    assert first.lease is not None
    restarted = keeper(locks, clock)
    restarted.adopt(first.lease)
    assert restarted.held
    with pytest.raises(ValueError, match="is not lock/b"):
        keeper(locks, clock, "b").adopt(first.lease)
    restarted.release()
    assert locks.holders("lock") == []
    assert keeper(locks, clock, "b").acquire()


class CountingStore(MemoryStateStore):
    """Counts the heartbeats (the agent's renewals of its hold on the instance)."""

    heartbeats = 0

    def record_heartbeat(
        self,
        service: str,
        instance_id: str,
        at: datetime,
        expires_at: datetime,
        *,
        claim: AgentClaim | None = None,
    ) -> None:
        self.heartbeats += 1
        super().record_heartbeat(service, instance_id, at, expires_at, claim=claim)


def test_the_scheduler_and_the_agent_hold_their_leases_by_the_same_rule(
    locks: CountingLocks, clock: FakeClock
) -> None:
    """Both renew at a third and not before: the one rule, not three. (The agent's hold
    lives on its instance item, engine/deploy/agent_lease.py; its renewal is a heartbeat.)"""
    leadership = Leadership(locks, clock, name="scheduler", owner="s", lease=LEASE)
    assert leadership.try_acquire()
    store = CountingStore(clock)
    # Only the hold is used here: no runtime or secrets are reached.
    unused: Any = None
    agent = build_agent(
        AgentSettings("i-1", "api", "test", owner="agent", agent_lease=LEASE),
        AgentAdapters(store=store, locks=locks, runtime=unused, secrets=unused, clock=clock),
        stop=threading.Event(),
    )
    assert agent.lease.acquire()
    liveness: Liveness = agent
    clock.advance(3.9)
    leadership.keep()
    liveness.keep_alive()
    assert (locks.renewals, store.heartbeats) == (0, 0)
    clock.advance(0.1)
    leadership.keep()
    liveness.keep_alive()
    assert (locks.renewals, store.heartbeats) == (1, 1)
    assert not liveness.stop_requested()
    clock.advance(13)
    now = clock.now()
    store.register_instance(
        Instance("i-1", "api", "test", now, now),
        expires_at=now + LEASE,
        claim=AgentClaim("another", now + LEASE),
    )
    liveness.keep_alive()
    assert liveness.stop_requested(), "an agent that lost its instance stops between steps"
