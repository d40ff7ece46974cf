"""The lock service contract: leases with slots, renewal, release by the holder only, fencing.

Run against memory, moto and DynamoDB Local; the concurrency tests only against memory
and DynamoDB Local (moto in-process loses conditional updates under threads).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from flotilla.engine.errors import LockLostError
from flotilla.engine.records import Lease
from tests.contract.conftest import Backend

LEASE = timedelta(seconds=30)


def test_a_free_lock_is_acquired_with_a_token(backend: Backend) -> None:
    lease = backend.locks.acquire("deploy/api", "i-1", slots=1, lease=LEASE)
    assert lease is not None
    assert (lease.name, lease.slot, lease.owner) == ("deploy/api", 0, "i-1")
    assert lease.token >= 1
    assert lease.expires_at == backend.clock.now() + LEASE
    assert backend.locks.holders("deploy/api") == [lease]


def test_a_held_one_slot_lock_refuses_a_second_holder(backend: Backend) -> None:
    assert backend.locks.acquire("deploy/api", "i-1", slots=1, lease=LEASE) is not None
    assert backend.locks.acquire("deploy/api", "i-2", slots=1, lease=LEASE) is None
    assert [h.owner for h in backend.locks.holders("deploy/api")] == ["i-1"]


def test_three_slots_admit_three_holders_on_distinct_slots(backend: Backend) -> None:
    leases = [backend.locks.acquire("deploy/api", f"i-{n}", slots=3, lease=LEASE) for n in range(4)]
    held = [lease for lease in leases if lease is not None]
    assert len(held) == 3
    assert leases[3] is None
    assert sorted(lease.slot for lease in held) == [0, 1, 2]


def test_release_frees_the_slot_and_the_next_holder_gets_a_larger_token(backend: Backend) -> None:
    first = backend.locks.acquire("deploy/api", "i-1", slots=1, lease=LEASE)
    assert first is not None
    assert backend.locks.release(first) is True
    second = backend.locks.acquire("deploy/api", "i-2", slots=1, lease=LEASE)
    assert second is not None
    assert second.token > first.token
    assert backend.locks.release(first) is False  # releasing twice changes nothing
    assert [h.owner for h in backend.locks.holders("deploy/api")] == ["i-2"]


def test_release_by_a_non_holder_changes_nothing(backend: Backend) -> None:
    held = backend.locks.acquire("deploy/api", "i-1", slots=1, lease=LEASE)
    assert held is not None
    impostors = [
        Lease(held.name, held.slot, "i-2", held.token, held.expires_at),
        Lease(held.name, held.slot, held.owner, held.token + 1, held.expires_at),
        Lease(held.name, held.slot + 1, held.owner, held.token, held.expires_at),
    ]
    for impostor in impostors:
        assert backend.locks.release(impostor) is False
    assert backend.locks.holders("deploy/api") == [held]
    assert backend.locks.acquire("deploy/api", "i-2", slots=1, lease=LEASE) is None


def test_a_holder_that_stops_renewing_loses_the_slot_to_a_larger_token(backend: Backend) -> None:
    dead = backend.locks.acquire("deploy/api", "i-dead", slots=1, lease=LEASE)
    assert dead is not None
    backend.clock.advance(LEASE.total_seconds() - 1)
    assert backend.locks.acquire("deploy/api", "i-2", slots=1, lease=LEASE) is None
    backend.clock.advance(1)
    assert backend.locks.holders("deploy/api") == []
    successor = backend.locks.acquire("deploy/api", "i-2", slots=1, lease=LEASE)
    assert successor is not None
    assert successor.token > dead.token
    with pytest.raises(LockLostError, match="no longer held"):
        backend.locks.renew(dead, duration=LEASE)
    assert backend.locks.release(dead) is False
    assert backend.locks.holders("deploy/api") == [successor]


def test_a_lapsed_lease_cannot_be_renewed_even_if_nobody_took_it(backend: Backend) -> None:
    lease = backend.locks.acquire("deploy/api", "i-1", slots=1, lease=LEASE)
    assert lease is not None
    backend.clock.advance(LEASE.total_seconds() + 1)
    with pytest.raises(LockLostError):
        backend.locks.renew(lease, duration=LEASE)


def test_a_renewing_holder_keeps_its_slot_however_long_it_takes(backend: Backend) -> None:
    lease = backend.locks.acquire("deploy/api", "i-1", slots=1, lease=LEASE)
    assert lease is not None
    for _ in range(20):  # ten minutes of a 30 s lease, renewed every 20 s
        backend.clock.advance(20)
        lease = backend.locks.renew(lease, duration=LEASE)
        assert backend.locks.acquire("deploy/api", "i-2", slots=1, lease=LEASE) is None
    assert lease.expires_at == backend.clock.now() + LEASE
    assert backend.locks.holders("deploy/api") == [lease]


def test_locks_of_different_names_are_independent(backend: Backend) -> None:
    assert backend.locks.acquire("deploy/api", "i-1", slots=1, lease=LEASE) is not None
    assert backend.locks.acquire("deploy/web", "i-2", slots=1, lease=LEASE) is not None
    assert backend.locks.acquire("scheduler", "s-1", slots=1, lease=LEASE) is not None


def test_fewer_slots_later_do_not_hand_out_held_slots(backend: Backend) -> None:
    held = [backend.locks.acquire("deploy/api", f"i-{n}", slots=3, lease=LEASE) for n in range(3)]
    assert all(held)
    assert backend.locks.acquire("deploy/api", "i-9", slots=1, lease=LEASE) is None


def test_lock_costs_in_dynamodb_calls(dynamodb_backend: Backend) -> None:
    """An uncontended acquire, a renewal and a release are one write each."""
    backend = dynamodb_backend
    assert backend.calls is not None
    backend.calls.reset()
    lease = backend.locks.acquire("deploy/api", "i-1", slots=1, lease=LEASE)
    assert lease is not None
    assert dict(backend.calls.calls) == {"UpdateItem": 1}
    backend.calls.reset()
    lease = backend.locks.renew(lease, duration=LEASE)
    assert dict(backend.calls.calls) == {"UpdateItem": 1}
    backend.calls.reset()
    assert backend.locks.release(lease)
    assert dict(backend.calls.calls) == {"UpdateItem": 1}


def test_a_slot_item_deleted_by_ttl_still_hands_out_a_larger_token(
    dynamodb_backend: Backend,
) -> None:
    """Expired slot items go a day after their lease; the tokens of the slot still grow, and
    stay larger than those of the per-lock counter (slot -1) earlier versions kept."""
    backend = dynamodb_backend
    assert backend.client is not None
    assert backend.tables is not None
    backend.client.put_item(
        TableName=backend.tables.locks,
        Item={"name": {"S": "scheduler"}, "slot": {"N": "-1"}, "token": {"N": "41"}},
    )
    first = backend.locks.acquire("scheduler", "s-1", slots=1, lease=LEASE)
    assert first is not None
    assert first.token > 41
    assert backend.locks.release(first)
    backend.client.delete_item(
        TableName=backend.tables.locks,
        Key={"name": {"S": "scheduler"}, "slot": {"N": str(first.slot)}},
    )
    backend.clock.advance(1)
    second = backend.locks.acquire("scheduler", "s-2", slots=1, lease=LEASE)
    assert second is not None
    assert second.token > first.token


@pytest.mark.parametrize("slots", [1, 3])
def test_competing_threads_never_exceed_the_slots(concurrent_backend: Backend, slots: int) -> None:
    locks = concurrent_backend.locks
    guard = threading.Lock()
    holding = 0
    most_at_once = 0
    acquisitions = 0
    tokens_by_slot: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def contend(owner: str) -> None:
        nonlocal holding, most_at_once, acquisitions
        try:
            for _ in range(15):
                lease = locks.acquire("race", owner, slots=slots, lease=timedelta(minutes=10))
                if lease is None:
                    continue
                with guard:
                    holding += 1
                    most_at_once = max(most_at_once, holding)
                    acquisitions += 1
                    tokens_by_slot.setdefault(lease.slot, []).append(lease.token)
                time.sleep(0.002)  # hold for a moment, so holders overlap if they can
                with guard:
                    holding -= 1
                assert locks.release(lease)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert acquisitions > 0
    assert most_at_once <= slots
    for tokens in tokens_by_slot.values():  # successive holders of a slot: ever larger tokens
        assert tokens == sorted(tokens)
        assert len(set(tokens)) == len(tokens)
