"""Keeps a deploy's lock slot while the deploy runs, however long it takes.

Renewal is synchronous: the runner calls `keep()` between steps and from inside every
wait, so it works the same on a fake clock, and a lease can never be renewed by a
thread that outlives the deploy. A lease must be longer than the longest single
blocking call (a systemd start job), which the defaults respect.
"""

from __future__ import annotations

from datetime import timedelta

from flotilla.engine.clock import Clock
from flotilla.engine.errors import LockLostError, TransientError
from flotilla.engine.ports import LockService
from flotilla.engine.records import Lease


class LeaseKeeper:
    """Renews one lease when a third of it is left; remembers if it was lost."""

    def __init__(self, locks: LockService, clock: Clock, lease: Lease, duration: timedelta):
        self._locks = locks
        self._clock = clock
        self._duration = duration
        self.lease: Lease | None = lease
        self.lost_reason: str | None = None

    def keep(self) -> None:
        """Renew if due. Never raises: a lost lease is recorded for the runner to act on."""
        if self.lease is None:
            return
        remaining = self.lease.expires_at - self._clock.now()
        if remaining > self._duration / 3:
            return
        try:
            self.lease = self._locks.renew(self.lease, duration=self._duration)
        except LockLostError as lost:
            self.lost_reason = lost.message
            self.lease = None
        except TransientError:
            # DynamoDB is unreachable for now; try again at the next call. If the outage
            # outlasts the lease, the renewal after it fails with LockLostError.
            return

    def release(self) -> None:
        if self.lease is not None:
            self._locks.release(self.lease)
            self.lease = None
