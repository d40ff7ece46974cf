"""Wake-up channels in memory, for the simulation and the unit tests.

A ring sets a flag on the channel; `wait` consumes it. On a clock that can interrupt a
sleep (the simulation's discrete-event clock: `sleep_interruptibly` / `interrupt`), a ring
wakes a sleeping waiter at once, as SQS's long poll does; on any other clock a waiter
sleeps its full time and then looks. It passes the wake-up contract suite
(tests/contract/test_wake_ups.py) that the SQS adapter passes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from flotilla.adapters.wake_rings import ring_each
from flotilla.engine.clock import Clock
from flotilla.engine.errors import FlotillaError, NotFoundError

PREFIX = "memory://wake/"


@runtime_checkable
class InterruptibleClock(Protocol):
    def sleep_interruptibly(self, seconds: float, key: str) -> None: ...
    def interrupt(self, key: str) -> None: ...


class MemoryWakeUps:
    """`WakeUps` in one process."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._rung: dict[str, bool] = {}  # address -> a ring is waiting to be consumed
        self._mutex = threading.Lock()
        self.rings = 0  # for the simulation's counts

    def open(self, instance_id: str) -> str:
        address = PREFIX + instance_id
        with self._mutex:
            self._rung.setdefault(address, False)
        return address

    def wait(self, address: str, seconds: float) -> bool:
        if self._take(address):
            return True
        if isinstance(self._clock, InterruptibleClock):
            self._clock.sleep_interruptibly(seconds, address)
        elif seconds > 0:
            self._clock.sleep(seconds)
        return self._take(address)

    def ring(self, address: str) -> None:
        with self._mutex:
            if address not in self._rung:
                raise NotFoundError(f"wake-up channel {address!r} does not exist")
            self._rung[address] = True
            self.rings += 1
        if isinstance(self._clock, InterruptibleClock):
            self._clock.interrupt(address)

    def ring_all(self, addresses: Sequence[str]) -> dict[str, FlotillaError]:
        # One after another, in the caller's thread: the simulation's clock lets one
        # thread run at a time, and a ring here costs nothing to wait for.
        return ring_each(self.ring, addresses)

    def close(self, address: str) -> None:
        with self._mutex:
            self._rung.pop(address, None)

    def _take(self, address: str) -> bool:
        with self._mutex:
            if address not in self._rung:
                raise NotFoundError(f"wake-up channel {address!r} does not exist")
            rung, self._rung[address] = self._rung[address], False
        return rung
