"""What each state of a deploy does to the world, through the ports.

Every step is idempotent: the agent may crash after a step's effect and before its
checkpoint, and the restarted agent runs the step again. Deregistering twice,
stopping a stopped unit, starting an active unit, releasing a released lock: all fine.
A step returns an `Advance` (the trigger to fire plus what to remember in the
checkpoint); a step that fails for good raises `StepFailed` with the reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from flotilla.engine import units as unit_names
from flotilla.engine.activation import plan_activation, settle
from flotilla.engine.checkpoint import DeployCheckpoint, LeaseRef
from flotilla.engine.clock import Clock
from flotilla.engine.deploy.retry import DeadlineExceededError, poll_until, with_retries
from flotilla.engine.deploy.telemetry import call_span
from flotilla.engine.errors import FlotillaError, UnitFailedError
from flotilla.engine.leases import LeaseKeeper
from flotilla.engine.liveness import live_instances
from flotilla.engine.ports import (
    LoadBalancer,
    LockService,
    SecretBox,
    StateStore,
    TargetState,
    UnitRuntime,
)
from flotilla.engine.records import Lease, Revision, Service
from flotilla.machines.deploy import RollbackWork

T = TypeVar("T")


class StepFailed(FlotillaError):
    """A step failed for good; the deploy goes down the failure path with this reason."""


@dataclass(frozen=True)
class Advance:
    """What a step reports: it succeeded, was skipped (a load-balancer state of a service
    without one) or failed; the machine maps that to its trigger (`success_trigger`,
    `failure_trigger`). The rest is recorded in the checkpoint."""

    skipped: bool = False
    failed: bool = False
    lease: LeaseRef | None = None
    clear_lease: bool = False
    deadlines: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class StepSettings:
    lease: timedelta = timedelta(seconds=120)
    # The longest sleep between two polls of a wait: short enough that the leases renewed
    # from inside waits (this deploy's slot, the agent's own lock) never lapse in between.
    max_poll_seconds: float = 5.0
    rollback_health_timeout: timedelta = timedelta(minutes=5)


@dataclass
class Ports:
    store: StateStore
    locks: LockService
    runtime: UnitRuntime
    secrets: SecretBox
    load_balancer: LoadBalancer | None
    clock: Clock


class Steps:
    """The effect of each working state, for one deploy."""

    def __init__(
        self,
        ports: Ports,
        service: Service,
        settings: StepSettings,
        keeper_factory: Callable[[Lease], LeaseKeeper],
        on_retry: Callable[[BaseException, int], None],
    ) -> None:
        self.ports = ports
        self.service = service
        self.settings = settings
        self._keeper_factory = keeper_factory
        self._on_retry = on_retry
        self.keeper: LeaseKeeper | None = None
        # Called from every wait: the agent renews its own lock through it.
        self.keep_alive: Callable[[], None] = lambda: None

    # --- plumbing --------------------------------------------------------------------

    def call(self, name: str, action: Callable[[], T]) -> T:
        """One port call: its own span, retried on throttling and 5xx."""
        with call_span(name, {"flotilla.call": name}):
            return with_retries(action, clock=self.ports.clock, on_retry=self._on_retry)

    def keep_lease(self) -> None:
        self.keep_alive()
        if self.keeper is not None:
            self.keeper.keep()
            if self.keeper.lost_reason is not None:
                raise StepFailed(f"lost the deploy lock: {self.keeper.lost_reason}")

    def wait(self, what: str, check: Callable[[], bool], deadline: datetime) -> None:
        def checked() -> bool:
            self.keep_lease()
            return check()

        try:
            poll_until(
                checked,
                deadline=deadline,
                clock=self.ports.clock,
                what=what,
                max_wait=self.settings.max_poll_seconds,
            )
        except DeadlineExceededError as late:
            raise StepFailed(late.message) from late

    def adopt_lease(self, checkpoint: DeployCheckpoint) -> None:
        """After a restart, take up the lease the checkpoint says this deploy holds."""
        if self.keeper is not None or checkpoint.lease is None:
            return
        ref = checkpoint.lease
        held = [
            lease
            for lease in self.call("lock.holders", lambda: self.ports.locks.holders(ref.name))
            if lease.slot == ref.slot and lease.token == ref.token and lease.owner == ref.owner
        ]
        if held:
            self.keeper = self._keeper_factory(held[0])
        # A lapsed lease is not adopted: `hold_slot` takes a slot again (waiting for one)
        # before a working state goes on.

    def _deadline(self, checkpoint: DeployCheckpoint, name: str, length: timedelta) -> datetime:
        """A deadline is computed once and stored: a resumed deploy gets no fresh budget."""
        return checkpoint.deadlines.get(name) or self.ports.clock.now() + length

    # --- the states ------------------------------------------------------------------

    def locking(self, checkpoint: DeployCheckpoint) -> Advance:
        self.adopt_lease(checkpoint)
        if self.keeper is not None and self.keeper.lease is not None:
            return Advance(lease=_ref(self.keeper.lease))
        return Advance(lease=_ref(self._take_slot(checkpoint)))

    def hold_slot(self, checkpoint: DeployCheckpoint) -> LeaseRef | None:
        """The working states after `locking` run only under a live slot. A deploy resumed
        after its lease lapsed (its agent was down longer than the lease) takes a slot
        again, waiting as `locking` does, before it goes on: meanwhile another instance
        may have taken the slot, and both must not leave the load balancer at once.
        Returns the new lease to record, or None when the recorded one is still held."""
        if checkpoint.lease is None:
            return None
        self.adopt_lease(checkpoint)
        if self.keeper is not None and self.keeper.lease is not None:
            return None
        return _ref(self._take_slot(checkpoint))

    def _take_slot(self, checkpoint: DeployCheckpoint) -> Lease:
        """A slot of the service's deploy lock, owned by the deploy (so that a restarted
        agent can adopt it): one taken before a crash and not yet checkpointed, or a new
        one, waited for until the deploy's overall deadline."""
        for existing in self._own_slots(checkpoint):
            self.keeper = self._keeper_factory(existing)
            return existing
        acquired: list[Lease] = []

        def try_acquire() -> bool:
            live = live_instances(self.ports.store, self.service.name, self.ports.clock.now())
            slots = self.service.rollout.slots(max(len(live), 1))
            lease = self.call(
                "lock.acquire",
                lambda: self.ports.locks.acquire(
                    self._lock_name, checkpoint.id, slots=slots, lease=self.settings.lease
                ),
            )
            if lease is not None:
                acquired.append(lease)
            return lease is not None

        self.wait("the deploy lock", try_acquire, checkpoint.deadlines["overall"])
        self.keeper = self._keeper_factory(acquired[0])
        return acquired[0]

    def _own_slots(self, checkpoint: DeployCheckpoint) -> list[Lease]:
        holders = self.call("lock.holders", lambda: self.ports.locks.holders(self._lock_name))
        return [lease for lease in holders if lease.owner == checkpoint.id]

    @property
    def _lock_name(self) -> str:
        return f"deploy/{self.service.name}"

    def deregistering(self, checkpoint: DeployCheckpoint) -> Advance:
        balancer = self.ports.load_balancer
        if balancer is None:
            return Advance(skipped=True)
        self.keep_lease()
        self.call("lb.deregister", lambda: balancer.deregister(checkpoint.instance_id))
        drain = timedelta(seconds=self.service.drain_timeout_seconds)
        return Advance(deadlines={"drain": self._deadline(checkpoint, "drain", drain)})

    def draining(self, checkpoint: DeployCheckpoint) -> Advance:
        balancer = self.ports.load_balancer
        if balancer is None:
            return Advance(skipped=True)
        drain = timedelta(seconds=self.service.drain_timeout_seconds)
        deadline = self._deadline(checkpoint, "drain", drain)
        self.wait(
            "connection draining",
            lambda: (
                self.call("lb.state", lambda: balancer.state(checkpoint.instance_id))
                is TargetState.UNUSED
            ),
            deadline,
        )
        return Advance()

    def stopping(self, checkpoint: DeployCheckpoint) -> Advance:
        self.keep_lease()
        self._stop_all_but(checkpoint.to_revision)
        return Advance()

    def _stop_all_but(self, keep_revision: str | None) -> None:
        runtime = self.ports.runtime
        owned = self.call("runtime.owned_units", runtime.owned_units)
        doomed = [
            name
            for name in owned
            if keep_revision is None or not unit_names.belongs_to(name, keep_revision)
        ]
        if doomed:
            self.call("runtime.stop", lambda: runtime.stop(doomed))
            self.call("runtime.remove", lambda: runtime.remove(doomed))

    def starting(self, checkpoint: DeployCheckpoint) -> Advance:
        self.keep_lease()
        self.start_revision(checkpoint.to_revision)
        health = timedelta(seconds=self.service.health_timeout_seconds)
        return Advance(deadlines={"health": self._deadline(checkpoint, "health", health)})

    def _revision(self, revision_id: str) -> Revision:
        return self.call(
            "store.get_revision",
            lambda: self.ports.store.get_revision(self.service.name, revision_id),
        )

    def start_revision(self, revision_id: str) -> None:
        """Install, start (the runtime returns once the units settled), and check that the
        units run well through the service's settle period."""
        revision = self._revision(revision_id)
        environments: dict[str, dict[str, str]] = {}
        if revision.environment is not None:
            sealed = revision.environment
            environments = self.call(
                "secrets.open", lambda: self.ports.secrets.open(self.service.name, sealed)
            )
        runtime = self.ports.runtime
        self.call(
            "runtime.install", lambda: runtime.install(revision.id, revision.units, environments)
        )
        plan = plan_activation(revision.units)
        to_start = [unit_names.installed_name(name, revision.id) for name in plan.start]
        try:
            self.call("runtime.start", lambda: runtime.start(to_start))
            self._require_well(revision, settle_seconds=self.service.settle_seconds)
        except UnitFailedError as failed:
            raise StepFailed(failed.message) from failed

    def _require_well(self, revision: Revision, *, settle_seconds: float | None = None) -> None:
        """Every started unit running well (active, or a oneshot done with success); just
        after starting (`settle_seconds` given), staying so through the settle period. The
        one settle loop, keeping the lease alive between looks."""
        plan = plan_activation(revision.units)
        installed = {unit_names.installed_name(name, revision.id): name for name in plan.start}
        starting = settle_seconds is not None
        settle(
            list(installed),
            lambda names: self.call("runtime.status", lambda: self.ports.runtime.status(names)),
            clock=self.ports.clock,
            run_once=[name for name, unit in installed.items() if unit in plan.run_once],
            hold=settle_seconds or 0.0,
            poll=1.0,
            what="failed to start" if starting else "is not running",
            just_started=starting,
            between=self.keep_lease,
        )

    def registering(self, checkpoint: DeployCheckpoint) -> Advance:
        balancer = self.ports.load_balancer
        if balancer is None:
            return Advance(skipped=True)
        self.keep_lease()
        self.call("lb.register", lambda: balancer.register(checkpoint.instance_id))
        return Advance()

    def healthy(self, checkpoint: DeployCheckpoint) -> Advance:
        balancer = self.ports.load_balancer
        try:
            self._require_well(self._revision(checkpoint.to_revision))
        except UnitFailedError as failed:
            raise StepFailed(failed.message) from failed
        if balancer is not None:
            health = timedelta(seconds=self.service.health_timeout_seconds)
            self.wait(
                "the load balancer's health check",
                lambda: (
                    self.call("lb.state", lambda: balancer.state(checkpoint.instance_id))
                    is TargetState.HEALTHY
                ),
                self._deadline(checkpoint, "health", health),
            )
        self.call(
            "store.set_current_revision",
            lambda: self.ports.store.set_current_revision(
                checkpoint.instance_id, checkpoint.to_revision
            ),
        )
        return Advance()

    def unlocked(self, checkpoint: DeployCheckpoint) -> Advance:
        if self.keeper is not None:
            keeper = self.keeper
            self.call("lock.release", keeper.release)
            self.keeper = None
        else:
            # After a restart: every live slot this deploy owns, the one its checkpoint
            # records or one taken just before a crash and never checkpointed (the deploy
            # then gave up in `locking`), rather than let it block the rollout until its
            # lease lapses. One read of the holders.
            for lease in self._own_slots(checkpoint):
                self.call("lock.release", functools.partial(self.ports.locks.release, lease))
        return Advance(clear_lease=True)

    def rolling_back(self, checkpoint: DeployCheckpoint, work: RollbackWork) -> Advance:
        """Undo what the failed deploy did: units back to the previous revision, and the
        instance back in the load balancer if it may have left it."""
        if work.restore_units:
            self._stop_all_but(checkpoint.from_revision)
            if checkpoint.from_revision is not None:
                self.start_revision(checkpoint.from_revision)
        balancer = self.ports.load_balancer
        if balancer is not None and work.reregister:
            self.call("lb.register", lambda: balancer.register(checkpoint.instance_id))
            deadline = self._deadline(checkpoint, "rollback", self.settings.rollback_health_timeout)
            self.wait(
                "the load balancer's health check after rollback",
                lambda: (
                    self.call("lb.state", lambda: balancer.state(checkpoint.instance_id))
                    is TargetState.HEALTHY
                ),
                deadline,
            )
        if work.restore_units:
            self.call(
                "store.set_current_revision",
                lambda: self.ports.store.set_current_revision(
                    checkpoint.instance_id, checkpoint.from_revision
                ),
            )
        return Advance()


def _ref(lease: Lease) -> LeaseRef:
    return LeaseRef(lease.name, lease.slot, lease.owner, lease.token)
