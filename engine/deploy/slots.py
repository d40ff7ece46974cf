"""A deploy's slot of its service's deploy lock: taken in `locking`, held through the
working states, released in `unlocked`.

The lock `deploy/<service>` has as many slots as the rollout policy's `max_in_flight`
allows for the live instances, so at most that many instances leave the load balancer at
once. A slot is owned by the deploy id, not by the agent process, so that an agent
restarted after a crash adopts the slot its deploy holds instead of waiting it out. The
slot is kept by the engine's one `LeaseKeeper` rule (engine/leases.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from flotilla.engine.checkpoint import DeployCheckpoint, LeaseRef
from flotilla.engine.clock import Clock
from flotilla.engine.deploy.errors import StepFailed
from flotilla.engine.leases import LeaseKeeper
from flotilla.engine.ports import LockService
from flotilla.engine.records import Lease, Service

T = TypeVar("T")


class Call(Protocol):
    """One port call in its own span, retried on throttling (`Steps.call`)."""

    def __call__(self, name: str, action: Callable[[], T]) -> T: ...


Wait = Callable[[str, Callable[[], bool], datetime], None]


def lock_name(service: str) -> str:
    return f"deploy/{service}"


class DeploySlot:
    """One deploy's slot: take, adopt after a restart, keep, release."""

    def __init__(
        self,
        *,
        locks: LockService,
        clock: Clock,
        service: Service,
        deploy_id: str,
        duration: timedelta,
        call: Call,
        wait: Wait,
    ) -> None:
        self._locks = locks
        self._clock = clock
        self._service = service
        self._call = call
        self._wait = wait
        self._name = lock_name(service.name)
        self.keeper = LeaseKeeper(locks, clock, name=self._name, owner=deploy_id, duration=duration)

    def keep(self) -> None:
        """Renew if due; `StepFailed` once the slot is gone (checked from every wait)."""
        self.keeper.keep()
        if self.keeper.lost:
            raise StepFailed(f"lost the deploy lock: {self.keeper.lost_reason}")

    def take(self, checkpoint: DeployCheckpoint) -> LeaseRef:
        """The slot `locking` records: the one the checkpoint names if still held, one
        taken before a crash and not yet checkpointed, or a new one, waited for until the
        deploy's overall deadline."""
        self._adopt_recorded(checkpoint)
        if self.keeper.lease is None:
            self._take_new(checkpoint)
        return _ref(self._held())

    def hold(self, checkpoint: DeployCheckpoint) -> LeaseRef | None:
        """The working states after `locking` run only under a live slot. A deploy resumed
        after its lease lapsed (its agent was down longer than the lease) takes a slot
        again, waiting as `locking` does, before it goes on: meanwhile another instance
        may have taken the slot, and both must not leave the load balancer at once.
        Returns the new lease to record, or None when the recorded one is still held."""
        if checkpoint.lease is None:
            return None
        self._adopt_recorded(checkpoint)
        if self.keeper.lease is not None:
            return None
        self._take_new(checkpoint)
        return _ref(self._held())

    def release(self) -> Lease | None:
        """Free the slot: the held one is returned, for the checkpoint that records its
        release to free it in the same write. After a restart (none held): every live slot
        this deploy owns, the one its checkpoint records or one taken just before a crash
        and never checkpointed (the deploy then gave up in `locking`), is freed here rather
        than left to block the rollout until its lease lapses. One read of the holders."""
        held = self.keeper.lease
        if held is not None:
            self.keeper.forget()
            return held
        for lease in self._own_slots():
            self._call("lock.release", functools.partial(self._locks.release, lease))
        return None

    # --- inside ----------------------------------------------------------------------------

    def _adopt_recorded(self, checkpoint: DeployCheckpoint) -> None:
        """After a restart, take up the lease the checkpoint says this deploy holds. A
        lapsed lease is not adopted: the caller takes a slot again."""
        ref = checkpoint.lease
        if self.keeper.lease is not None or ref is None:
            return
        holders = self._call("lock.holders", lambda: self._locks.holders(ref.name))
        for lease in holders:
            if (lease.slot, lease.token, lease.owner) == (ref.slot, ref.token, ref.owner):
                self.keeper.adopt(lease)
                return

    def _take_new(self, checkpoint: DeployCheckpoint) -> None:
        # An earlier runner of this state may have taken a slot and died before recording
        # it: look for one only then (the state's attempt count says so), not on every
        # first visit, where there cannot be one.
        if checkpoint.attempts.get(checkpoint.state, 1) > 1:
            for existing in self._own_slots():
                self.keeper.adopt(existing)
                return

        # As the scheduler counted them for the live instances: a deploy never reads the
        # whole service (a 3 MB query at 10 000 instances). Before any scheduler planned the
        # service, the policy's count for one instance: the fewest slots it can mean.
        slots = self._service.rollout_state.slots or self._service.rollout.slots(1)

        def try_acquire() -> bool:
            return self._call("lock.acquire", lambda: self.keeper.acquire(slots=slots))

        self._wait("the deploy lock", try_acquire, checkpoint.deadlines["overall"])

    def _own_slots(self) -> list[Lease]:
        holders = self._call("lock.holders", lambda: self._locks.holders(self._name))
        return [lease for lease in holders if lease.owner == self.keeper.owner]

    def _held(self) -> Lease:
        lease = self.keeper.lease
        if lease is None:  # `wait` returns only once `try_acquire` took one
            raise StepFailed("the deploy lock slot was not taken")
        return lease


def _ref(lease: Lease) -> LeaseRef:
    return LeaseRef(lease.name, lease.slot, lease.owner, lease.token)
