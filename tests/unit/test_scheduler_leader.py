"""Leadership: one lease holder, renewal after a third, refusal near expiry, clean demotion."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flotilla.adapters.memory_locks import MemoryLockService
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import LockLostError, TransientError
from flotilla.engine.records import Lease
from flotilla.scheduler.leader import Leadership, lock_name

LEASE = timedelta(seconds=12)


class FlakyLocks(MemoryLockService):
    """Renewals fail as if DynamoDB were unreachable while `down` is set."""

    down = False
    writes = 0

    def renew(self, lease: Lease, *, duration: timedelta) -> Lease:
        if self.down:
            raise TransientError("DynamoDB unreachable")
        return super().renew(lease, duration=duration)

    def acquire(self, name: str, owner: str, *, slots: int, lease: timedelta) -> Lease | None:
        self.writes += 1
        return super().acquire(name, owner, slots=slots, lease=lease)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def locks(clock: FakeClock) -> FlakyLocks:
    return FlakyLocks(clock)


def leader(locks: FlakyLocks, clock: FakeClock, owner: str) -> Leadership:
    return Leadership(locks, clock, name="scheduler", owner=owner, lease=LEASE)


def test_lock_names_per_shard() -> None:
    assert lock_name(0, 1) == "scheduler"
    assert lock_name(2, 4) == "scheduler/2-of-4"


def test_one_leader_and_a_standby_that_costs_no_writes(locks: FlakyLocks, clock: FakeClock) -> None:
    a, b = leader(locks, clock, "a"), leader(locks, clock, "b")
    assert a.try_acquire()
    writes = locks.writes
    for _ in range(5):
        assert not b.try_acquire()
        clock.advance(2)
        a.keep()
    assert locks.writes == writes  # a standby only reads the lease
    assert [h.owner for h in locks.holders("scheduler")] == ["a"]


def test_the_lease_is_renewed_once_a_third_has_passed(locks: FlakyLocks, clock: FakeClock) -> None:
    a = leader(locks, clock, "a")
    assert a.try_acquire()
    first = a.lease
    assert first is not None
    clock.advance(3)
    a.keep()
    assert a.lease == first
    clock.advance(1.5)
    a.keep()
    assert a.lease is not None
    assert a.lease.expires_at == clock.now() + LEASE
    assert a.seconds_until_renewal() == pytest.approx(4.0)


def test_a_standby_takes_over_once_a_dead_leaders_lease_ran_out(
    locks: FlakyLocks, clock: FakeClock
) -> None:
    a, b = leader(locks, clock, "a"), leader(locks, clock, "b")
    assert a.try_acquire()
    clock.advance(11.9)
    assert not b.try_acquire()
    clock.advance(0.2)
    assert b.try_acquire()
    assert b.lease is not None
    assert a.lease is not None
    assert b.lease.token > a.lease.token
    with pytest.raises(LockLostError):
        a.guard()
    assert not a.is_leader


def test_guard_refuses_to_write_near_expiry_even_if_renewal_is_only_delayed(
    locks: FlakyLocks, clock: FakeClock
) -> None:
    a = leader(locks, clock, "a")
    assert a.try_acquire()
    locks.down = True
    clock.advance(6)
    assert a.guard() >= 1  # renewal failed, but 6 s (> a quarter) are left
    clock.advance(3.5)
    with pytest.raises(LockLostError):
        a.guard()
    assert not a.is_leader


def test_a_short_outage_is_ridden_out(locks: FlakyLocks, clock: FakeClock) -> None:
    a = leader(locks, clock, "a")
    assert a.try_acquire()
    locks.down = True
    clock.advance(5)
    a.guard()
    locks.down = False
    clock.advance(1)
    a.guard()
    assert a.lease is not None
    assert a.lease.expires_at == clock.now() + LEASE


def test_stepping_down_frees_the_lease_at_once(locks: FlakyLocks, clock: FakeClock) -> None:
    a, b = leader(locks, clock, "a"), leader(locks, clock, "b")
    assert a.try_acquire()
    a.step_down()
    assert not a.is_leader
    assert b.try_acquire()
    a.step_down()  # twice is harmless
