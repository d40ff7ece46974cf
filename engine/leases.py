"""Keeping a lease: the one rule by which every Flotilla lease is held.

Three holders use it: a deploy's slot of its service's deploy lock, an agent's own lease
on its instance (`agent/<instance>`), and the scheduler's leadership. Each takes the lease,
renews it once a third of it has passed, refuses to act under it when less than a quarter
is left, and releases it when done:

- renewing at a third means a holder that looks in at least every two thirds of a lease
  (the agent's poll, a wait's longest sleep) can never let it lapse between two looks;
- the quarter is the safety margin: a write started while a quarter is left lands before
  anybody else may take the lease over, so `guard()` refuses (`LockLostError`) below it;
- while the lock service cannot be reached (`TransientError`) the lease is kept as long as
  the margin allows and then counted as lost: nobody may act under a lease it may no longer
  hold.

Renewal is synchronous: holders call `keep()` between steps and from inside every wait, so
it works the same on a fake clock, and a lease is never renewed by a thread that outlives
its holder. A lost lease is recorded (`lost_reason`) rather than raised by `keep()`, so a
long wait can notice it at its next look; `guard()` raises.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flotilla.engine.clock import Clock
from flotilla.engine.errors import LockLostError, TransientError
from flotilla.engine.ports import LockService
from flotilla.engine.records import Lease

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Takes, keeps, guards and releases one lease (one slot of lock `name`) for `owner`.
    Not thread-safe: one loop uses it."""

    def __init__(
        self, locks: LockService, clock: Clock, *, name: str, owner: str, duration: timedelta
    ) -> None:
        if duration <= timedelta(0):
            raise ValueError("a lease must be positive")
        self.name = name
        self.owner = owner
        self.duration = duration
        self.renew_after = duration / 3
        self.margin = duration / 4
        self._locks = locks
        self._clock = clock
        self._lease: Lease | None = None
        self.lost_reason: str | None = None

    @property
    def lease(self) -> Lease | None:
        return self._lease

    @property
    def held(self) -> bool:
        return self._lease is not None

    @property
    def lost(self) -> bool:
        """Whether a lease held by this keeper was lost (until it takes one again)."""
        return self.lost_reason is not None

    # --- taking --------------------------------------------------------------------------

    def acquire(self, *, slots: int = 1) -> bool:
        """Take a free slot (one of `slots`) unless one is held already."""
        if self._lease is None:
            self._lease = self._locks.acquire(
                self.name, self.owner, slots=slots, lease=self.duration
            )
            if self._lease is not None:
                self.lost_reason = None
        return self._lease is not None

    def adopt(self, lease: Lease) -> None:
        """Keep a lease taken by an earlier process of the same owner (after a restart)."""
        if (lease.name, lease.owner) != (self.name, self.owner):
            raise ValueError(f"{lease.name}/{lease.owner} is not {self.name}/{self.owner}")
        self._lease = lease
        self.lost_reason = None

    # --- keeping -------------------------------------------------------------------------

    def keep(self) -> None:
        """Renew once a third has passed. Never raises: a lost lease is recorded."""
        lease = self._lease
        if lease is None:
            return
        left = lease.expires_at - self._clock.now()
        if left > self.duration - self.renew_after:
            return
        try:
            self._lease = self._locks.renew(lease, duration=self.duration)
        except LockLostError as lost:
            self._lose(lost.message)
        except TransientError as unreachable:
            if left <= self.margin:
                self._lose(f"could not renew {self.name} before it ran out ({unreachable.message})")
            else:
                log.warning("could not renew %s yet: %s", self.name, unreachable.message)

    def guard(self) -> int:
        """Call before acting under the lease: keeps it, and refuses (`LockLostError`) when it
        is gone or less than the margin is left. Returns the lease's fencing token."""
        self.keep()
        if self._lease is None:
            raise LockLostError(self.lost_reason or f"not holding {self.name}")
        if self._lease.expires_at - self._clock.now() <= self.margin:
            self._lose(f"the lease on {self.name} is about to run out; not acting under it")
            raise LockLostError(self.lost_reason or "")
        return self._lease.token

    def seconds_until_renewal(self) -> float:
        """How long the holder may block before `keep()` has work to do (0 when not held)."""
        if self._lease is None:
            return 0.0
        due = self._lease.expires_at - (self.duration - self.renew_after)
        return max(0.0, (due - self._clock.now()).total_seconds())

    # --- letting go ----------------------------------------------------------------------

    def release(self) -> None:
        """Free the slot if still held. Errors reach the caller (the lease stays recorded,
        so a retried release frees it)."""
        if self._lease is not None:
            self._locks.release(self._lease)
            self._lease = None

    def forget(self) -> None:
        """Drop a lease known to be lost, without touching the lock service."""
        self._lease = None

    def _lose(self, reason: str) -> None:
        self._lease = None
        self.lost_reason = reason
