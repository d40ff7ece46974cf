"""Leadership of the scheduler (or of one shard of it): a lease from the lock service.

Several schedulers may run; the one holding the lease `scheduler` (or
`scheduler/<segment>-of-<segments>` when services are sharded) is active. It renews the
lease when a third of it has passed, and before every write it calls `guard()`, which
renews if due and refuses (`LockLostError`) unless the lease still has a safety margin
left. So a scheduler that lost its lease, or that was paused long enough to lose it,
stops before writing anything else. `guard()` returns the fencing token, which the
scheduler stores on the services it writes: a record carrying a newer token of the same
lock tells an old leader that somebody else leads now.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flotilla.engine.clock import Clock
from flotilla.engine.errors import LockLostError, TransientError
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
        self.duration = lease
        # Renew once a third has passed; stop writing when less than a quarter is left, so
        # a write in progress lands before any other scheduler may take the lease over.
        self.renew_after = lease / 3
        self.margin = lease / 4
        self._locks = locks
        self._clock = clock
        self._lease: Lease | None = None

    @property
    def lease(self) -> Lease | None:
        return self._lease

    @property
    def is_leader(self) -> bool:
        return self._lease is not None

    def try_acquire(self) -> bool:
        """Become leader if nobody holds the lease. A read first: a standby costs no writes."""
        if self._lease is not None:
            return True
        if self._locks.holders(self.name):
            return False
        self._lease = self._locks.acquire(self.name, self.owner, slots=1, lease=self.duration)
        if self._lease is not None:
            log.info("leading %s with token %d", self.name, self._lease.token)
        return self._lease is not None

    def keep(self) -> None:
        """Renew the lease if a third of it has passed; `LockLostError` if it is gone."""
        lease = self._held()
        now = self._clock.now()
        if lease.expires_at - now > self.duration - self.renew_after:
            return
        try:
            self._lease = self._locks.renew(lease, duration=self.duration)
        except LockLostError:
            self._lease = None
            raise
        except TransientError as unreachable:
            # Keep leading through a short outage, but never past the safety margin.
            if lease.expires_at - now <= self.margin:
                self._lease = None
                raise LockLostError(
                    f"could not renew {self.name} before it ran out ({unreachable.message})"
                ) from unreachable
            log.warning("could not renew %s yet: %s", self.name, unreachable.message)

    def guard(self) -> int:
        """Call before every write: renews if due, refuses near expiry, returns the token."""
        self.keep()
        lease = self._held()
        if lease.expires_at - self._clock.now() <= self.margin:
            self._lease = None
            raise LockLostError(
                f"the lease on {self.name} is about to run out; not writing under it"
            )
        return lease.token

    def seconds_until_renewal(self) -> float:
        """How long the loop may block (e.g. in a long poll) before it must renew."""
        lease = self._held()
        due = lease.expires_at - (self.duration - self.renew_after)
        return max(0.0, (due - self._clock.now()).total_seconds())

    def forget(self) -> None:
        """Drop a lease known to be lost, without touching the lock service."""
        self._lease = None

    def step_down(self) -> None:
        """Release the lease so a standby takes over at once (on shutdown)."""
        lease, self._lease = self._lease, None
        if lease is None:
            return
        try:
            self._locks.release(lease)
        except TransientError as unreachable:
            log.warning("could not release %s: %s", self.name, unreachable.message)

    def _held(self) -> Lease:
        if self._lease is None:
            raise LockLostError(f"not holding {self.name}")
        return self._lease
