"""Leadership of the scheduler (or of one shard of it): a lease from the lock service.

Several schedulers may run; the one holding the lease `scheduler` (or
`scheduler/<segment>-of-<segments>` when services are sharded) is active. The lease is
kept by the engine's `LeaseKeeper` (engine/leases.py: renewed once a third has passed,
refused below a quarter, lost when an outage eats the margin), the same rule as every
other lease. Before every write the scheduler calls `guard()`, which returns the fencing
token; the scheduler stores it on the services it writes, so a record carrying a newer
token of the same lock tells an old leader that somebody else leads now.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flotilla.engine.clock import Clock
from flotilla.engine.errors import LockLostError, TransientError
from flotilla.engine.leases import LeaseKeeper
from flotilla.engine.ports import LockService
from flotilla.engine.records import Lease

log = logging.getLogger(__name__)


def lock_name(segment: int, segments: int) -> str:
    """The lease a scheduler of this shard competes for."""
    return "scheduler" if segments == 1 else f"scheduler/{segment}-of-{segments}"


class Leadership:
    """Holds, renews and checks one leader lease. Not thread-safe: one loop uses it."""

    def __init__(
        self, locks: LockService, clock: Clock, *, name: str, owner: str, lease: timedelta
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError("the leader lease must be positive")
        self.name = name
        self.owner = owner
        self._locks = locks
        self._keeper = LeaseKeeper(locks, clock, name=name, owner=owner, duration=lease)

    @property
    def lease(self) -> Lease | None:
        return self._keeper.lease

    @property
    def is_leader(self) -> bool:
        return self._keeper.held

    def try_acquire(self) -> bool:
        """Become leader if nobody holds the lease. A read first: a standby costs no writes."""
        if self._keeper.held:
            return True
        if self._locks.holders(self.name):
            return False
        if self._keeper.acquire() and self._keeper.lease is not None:
            log.info("leading %s with token %d", self.name, self._keeper.lease.token)
        return self._keeper.held

    def keep(self) -> None:
        """Renew the lease if due; `LockLostError` if it is gone."""
        self._keeper.keep()
        if not self._keeper.held:
            raise LockLostError(self._keeper.lost_reason or f"not holding {self.name}")

    def guard(self) -> int:
        """Call before every write: renews if due, refuses near expiry, returns the token."""
        return self._keeper.guard()

    def seconds_until_renewal(self) -> float:
        """How long the loop may block (e.g. in a long poll) before it must renew."""
        if not self._keeper.held:
            raise LockLostError(f"not holding {self.name}")
        return self._keeper.seconds_until_renewal()

    def forget(self) -> None:
        """Drop a lease known to be lost, without touching the lock service."""
        self._keeper.forget()

    def step_down(self) -> None:
        """Release the lease so a standby takes over at once (on shutdown)."""
        try:
            self._keeper.release()
        except TransientError as unreachable:
            log.warning("could not release %s: %s", self.name, unreachable.message)
            self._keeper.forget()
