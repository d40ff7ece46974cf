"""Leases in memory, with the same rules as the DynamoDB lock service (and its contract suite).

Used by unit tests, simulations and the scale benchmark. Times are kept in whole
milliseconds, as DynamoDB items keep them, so both behave alike at the edges.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta

from flotilla.engine.clock import Clock, from_epoch_ms, to_epoch_ms
from flotilla.engine.errors import LockLostError
from flotilla.engine.records import Lease


@dataclass
class _Slot:
    owner: str | None
    token: int
    expires_ms: int


class MemoryLockService:
    """`LockService` held in a dict, under one mutex."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._mutex = threading.Lock()
        self._counters: dict[str, int] = {}
        self._slots: dict[tuple[str, int], _Slot] = {}

    def acquire(self, name: str, owner: str, *, slots: int, lease: timedelta) -> Lease | None:
        if slots < 1:
            raise ValueError("a lock needs at least one slot")
        with self._mutex:
            token = self._counters.get(name, 0) + 1
            self._counters[name] = token
            now_ms = to_epoch_ms(self._clock.now())
            expires_ms = to_epoch_ms(self._clock.now() + lease)
            for offset in range(slots):
                slot = (token + offset) % slots
                current = self._slots.get((name, slot))
                free = current is None or current.owner is None or current.expires_ms <= now_ms
                if free and (current is None or current.token < token):
                    self._slots[(name, slot)] = _Slot(owner, token, expires_ms)
                    return Lease(name, slot, owner, token, from_epoch_ms(expires_ms))
        return None

    def renew(self, lease: Lease, *, duration: timedelta) -> Lease:
        with self._mutex:
            now_ms = to_epoch_ms(self._clock.now())
            current = self._slots.get((lease.name, lease.slot))
            if (
                current is None
                or current.owner != lease.owner
                or current.token != lease.token
                or current.expires_ms <= now_ms
            ):
                raise LockLostError(
                    f"lease on {lease.name!r} slot {lease.slot} (token {lease.token}) is no "
                    "longer held: it expired or another holder took it; stop what it protected"
                )
            current.expires_ms = to_epoch_ms(self._clock.now() + duration)
            return Lease(
                lease.name, lease.slot, lease.owner, lease.token, from_epoch_ms(current.expires_ms)
            )

    def release(self, lease: Lease) -> bool:
        with self._mutex:
            current = self._slots.get((lease.name, lease.slot))
            if current is None or current.owner != lease.owner or current.token != lease.token:
                return False
            current.owner = None
            current.expires_ms = 0
            return True

    def holders(self, name: str) -> list[Lease]:
        with self._mutex:
            now_ms = to_epoch_ms(self._clock.now())
            return [
                Lease(name, slot, held.owner, held.token, from_epoch_ms(held.expires_ms))
                for (lock, slot), held in sorted(self._slots.items())
                if lock == name and held.owner is not None and held.expires_ms > now_ms
            ]
