"""What each state of a deploy does to the world, through the ports.

Every step is idempotent: the agent may crash after a step's effect and before its
checkpoint, and the restarted agent runs the step again. Deregistering twice,
stopping a stopped unit, starting an active unit, releasing a released lock: all fine.
A step returns an `Advance` (whether it succeeded or was skipped, plus what to remember
in the checkpoint); a step that fails for good raises `StepFailed` with the reason.
`STEPS` maps every state of the machine that has a step to the method performing it.

Since machine version 2 a deploy decides in `locking` which units change (a `UnitPlan`,
engine/unit_plan.py) and touches only those: `stopping` stops what the target does not
keep, `starting` installs the target with the kept units under the names they run under
and starts only the new ones, and a rollback restores exactly the previous set. A version 1
checkpoint has no plan and runs as it did: every unit of the target under its own name.
An unassignment (`to_revision` None) stops and removes every owned unit.

Container units run a digest, not a tag (engine/container_images.py): `locking` pulls the
images of the container units the deploy starts and records the digests, with those the
running units were started with, in the checkpoint; every install pins them.

A revision's lifecycle hooks run inside these states (engine/deploy/hooks.py says where
and why no state of their own): before-stop, after-start, validate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Final, TypeVar

from flotilla.engine.checkpoint import DeployCheckpoint, UnitPlan
from flotilla.engine.deploy import image_pins
from flotilla.engine.deploy.errors import StepFailed
from flotilla.engine.deploy.hooks import LifecycleHooks
from flotilla.engine.deploy.probing import require_service_probe
from flotilla.engine.deploy.retry import DeadlineExceededError, poll_until, with_retries
from flotilla.engine.deploy.revision_cache import RevisionCache
from flotilla.engine.deploy.revision_units import RevisionUnits
from flotilla.engine.deploy.slots import DeploySlot
from flotilla.engine.deploy.step_records import SKIPPED, Advance, Ports, StepSettings
from flotilla.engine.deploy.telemetry import call_span
from flotilla.engine.errors import UnitFailedError
from flotilla.engine.ports import (
    TargetState,
)
from flotilla.engine.records import CurrentRevision, Service
from flotilla.engine.unit_plan import plan_units, running_names
from flotilla.machines import deploy as machine
from flotilla.machines.deploy import State

T = TypeVar("T")

__all__ = ["SKIPPED", "STEPS", "Advance", "Ports", "StepFailed", "StepSettings", "Steps"]


class Steps:
    """The effect of each state, for one deploy (or, without one, for its `units`)."""

    def __init__(
        self,
        ports: Ports,
        service: Service,
        settings: StepSettings,
        *,
        deploy_id: str,
        keep_alive: Callable[[], None],
        on_retry: Callable[[BaseException, int], None],
        revisions: RevisionCache | None = None,
    ) -> None:
        self.ports = ports
        self.service = service
        self.settings = settings
        self._on_retry = on_retry
        # Called from every wait: the agent renews its own lease through it.
        self._keep_alive = keep_alive
        self.slot = DeploySlot(
            locks=ports.locks,
            clock=ports.clock,
            service=service,
            deploy_id=deploy_id,
            duration=settings.lease,
            call=self.call,
            wait=self.wait,
        )
        self.units = RevisionUnits(
            ports,
            service,
            call=self.call,
            keep_lease=self.keep_lease,
            revisions=revisions or RevisionCache(),
        )
        self.hooks = LifecycleHooks(
            ports.runtime,
            environments=self.units.environments,
            call=self.call,
            keep_lease=self.keep_lease,
        )

    # --- plumbing --------------------------------------------------------------------

    def call(self, name: str, action: Callable[[], T]) -> T:
        """One port call: its own span, retried on throttling and 5xx."""
        with call_span(name, {"flotilla.call": name}):
            return with_retries(action, clock=self.ports.clock, on_retry=self._on_retry)

    def keep_lease(self) -> None:
        """Keep the agent's lease and this deploy's slot; `StepFailed` if the slot is lost."""
        self._keep_alive()
        self.slot.keep()

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

    def _deadline(self, checkpoint: DeployCheckpoint, name: str, length: timedelta) -> datetime:
        """A deadline is computed once and stored: a resumed deploy gets no fresh budget."""
        return checkpoint.deadlines.get(name) or self.ports.clock.now() + length

    # --- the states ------------------------------------------------------------------

    def pending(self, checkpoint: DeployCheckpoint) -> Advance:
        overall = self._deadline(checkpoint, "overall", self.settings.overall_timeout)
        return Advance(deadlines={"overall": overall})

    def _plan(self, checkpoint: DeployCheckpoint) -> UnitPlan:
        """Which units change: both revisions fetched, verified and their environments
        opened here, in memory; only names are kept (engine/unit_plan.py)."""
        previous = target = None
        before: dict[str, str] = {}
        if checkpoint.from_revision is not None:
            previous = self.units.revision(checkpoint.from_revision)
            owned = self.call("runtime.owned_units", self.ports.runtime.owned_units)
            before = running_names(owned, previous.units, previous.id)
        if checkpoint.to_revision is not None:
            target = self.units.revision(checkpoint.to_revision)
        return plan_units(
            before=before,
            from_units=dict(previous.units) if previous else {},
            from_environments=self.units.environments(previous) if previous else {},
            to_revision=checkpoint.to_revision,
            to_units=dict(target.units) if target else {},
            to_environments=self.units.environments(target) if target else {},
        )

    def locking(self, checkpoint: DeployCheckpoint) -> Advance:
        # The unit plan is decided here, in a working state: a revision that cannot be
        # verified or opened fails the deploy (with nothing to undo) instead of leaving
        # it uncreated. Before the slot is taken, so a failure leaks no slot.
        plan = checkpoint.units
        if plan is None and checkpoint.machine_version >= 2:
            plan = self._plan(checkpoint)
        # Images are pulled here too, before traffic leaves and anything stops: a pull
        # that fails leaves the old units serving, and a slow one does not lengthen the
        # time the instance is out of its load balancer.
        images = self._pin_images(checkpoint, plan)
        return Advance(lease=self.slot.take(checkpoint), units=plan, images=images)

    def _pin_images(
        self, checkpoint: DeployCheckpoint, plan: UnitPlan | None
    ) -> dict[str, str] | None:
        """The digests the deploy's container units run (engine/deploy/image_pins.py); None
        when nothing is pinned: no plan, no image port, or pinned already."""
        images = self.ports.images
        if checkpoint.images is not None or plan is None or images is None:
            return None
        running = {}
        if checkpoint.from_revision is not None:
            running = self.units.running_pins(checkpoint.instance_id, checkpoint.from_revision)
        target = self.units.revision(checkpoint.to_revision) if checkpoint.to_revision else None
        return image_pins.pins_for_deploy(
            plan,
            target.units if target else None,
            running,
            lambda image: self.call("images.pull", functools.partial(images.pull, image)),
        )

    def deregistering(self, checkpoint: DeployCheckpoint) -> Advance:
        balancer = self.ports.load_balancer
        if balancer is None:
            return SKIPPED
        self.keep_lease()
        self.call("lb.deregister", lambda: balancer.deregister(checkpoint.instance_id))
        drain = timedelta(seconds=self.service.drain_timeout_seconds)
        return Advance(deadlines={"drain": self._deadline(checkpoint, "drain", drain)})

    def draining(self, checkpoint: DeployCheckpoint) -> Advance:
        balancer = self.ports.load_balancer
        if balancer is None:
            return SKIPPED
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
        # The target is fetched and verified before anything is stopped: a tampered
        # revision fails the deploy while the old units still run.
        if checkpoint.to_revision is not None:
            self.hooks.run(self.units.revision(checkpoint.to_revision), "before-stop")
        plan = checkpoint.units
        if plan is not None:
            self.units.stop_all_but(keep=set(plan.after.values()))
        else:
            self.units.stop_all_but(revision=checkpoint.to_revision)
        return Advance()

    def starting(self, checkpoint: DeployCheckpoint) -> Advance:
        self.keep_lease()
        if checkpoint.to_revision is None:
            raise StepFailed("an unassignment has nothing to start")  # the machine skips it
        plan = checkpoint.units
        if plan is None:
            self.units.start(checkpoint.to_revision)
        else:
            self.units.start(
                checkpoint.to_revision, names=plan.after, only=plan.start, images=checkpoint.images
            )
        self.hooks.run(self.units.revision(checkpoint.to_revision), "after-start")
        health = timedelta(seconds=self.service.health_timeout_seconds)
        return Advance(deadlines={"health": self._deadline(checkpoint, "health", health)})

    def registering(self, checkpoint: DeployCheckpoint) -> Advance:
        balancer = self.ports.load_balancer
        if balancer is None:
            return SKIPPED
        self.keep_lease()
        self.call("lb.register", lambda: balancer.register(checkpoint.instance_id))
        return Advance()

    def healthy(self, checkpoint: DeployCheckpoint) -> Advance:
        if checkpoint.to_revision is None:
            return self._nothing_left(checkpoint)
        balancer = self.ports.load_balancer
        plan = checkpoint.units
        try:
            self.units.require_well(
                self.units.revision(checkpoint.to_revision), plan.after if plan else None
            )
        except UnitFailedError as failed:
            raise StepFailed(failed.message) from failed
        self._validate(checkpoint.to_revision)
        self._probe(checkpoint)
        if balancer is not None and not checkpoint.traffic_kept:
            health = timedelta(seconds=self.service.health_timeout_seconds)
            self.wait(
                "the load balancer's health check",
                lambda: (
                    self.call("lb.state", lambda: balancer.state(checkpoint.instance_id))
                    is TargetState.HEALTHY
                ),
                self._deadline(checkpoint, "health", health),
            )
        # Recorded with this state's checkpoint, in the same write.
        return Advance(current=CurrentRevision(checkpoint.instance_id, checkpoint.to_revision))

    def _probe(self, checkpoint: DeployCheckpoint) -> None:
        """Without a load balancer, the service's own probe, if it has one
        (engine/deploy/probing.py), within the stored health deadline."""
        health = timedelta(seconds=self.service.health_timeout_seconds)
        deadline = self._deadline(checkpoint, "health", health)
        require_service_probe(
            self.ports.probe, self.service, self.ports.clock, deadline, between=self.keep_lease
        )

    def _validate(self, revision_id: str) -> None:
        """The revision's `validate` hook, if it has one: its failure fails the deploy,
        which the machine then rolls back."""
        self.hooks.run(self.units.revision(revision_id), "validate")

    def _nothing_left(self, checkpoint: DeployCheckpoint) -> Advance:
        """An unassignment is healthy once no unit Flotilla owns is left on the instance."""
        left = self.call("runtime.owned_units", self.ports.runtime.owned_units)
        if left:
            raise StepFailed(f"units still installed after stopping: {', '.join(left)}")
        return Advance(current=CurrentRevision(checkpoint.instance_id, None))

    def unlocked(self, checkpoint: DeployCheckpoint) -> Advance:
        # The held slot is freed by the checkpoint that records it, in the same write.
        return Advance(clear_lease=True, release=self.slot.release())

    def failed(self, checkpoint: DeployCheckpoint) -> Advance:
        return Advance()  # nothing to do: the failure is recorded; `rolling_back` undoes it

    def rolling_back(self, checkpoint: DeployCheckpoint) -> Advance:
        """Undo what the failed deploy did, as the machine rules for the state it failed in:
        units back to the previous revision, and the instance back in the load balancer if
        it may have left it."""
        work = machine.rollback_work(
            checkpoint.failed_in,
            has_load_balancer=self.service.load_balancer is not None,
            traffic_kept=checkpoint.traffic_kept,
        )
        plan = checkpoint.units
        if work.restore_units:
            if plan is not None:  # exactly the previous set, under the names it ran under
                self.units.stop_all_but(keep=set(plan.before.values()))
            else:
                self.units.stop_all_but(revision=checkpoint.from_revision)
            if checkpoint.from_revision is not None:
                if plan is None:
                    self.units.start(checkpoint.from_revision)
                else:
                    self.units.start(
                        checkpoint.from_revision,
                        names=plan.before,
                        only=plan.stop,
                        images=checkpoint.images,
                    )
                # The previous revision's own hooks, as after its first start: a rollback
                # that cannot bring it back healthy has failed.
                previous = self.units.revision(checkpoint.from_revision)
                self.hooks.run(previous, "after-start")
                self.hooks.run(previous, "validate")
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
            # Recorded with this state's checkpoint, in the same write.
            return Advance(
                current=CurrentRevision(checkpoint.instance_id, checkpoint.from_revision)
            )
        return Advance()


# The step each state performs: the machine decides which state comes next, this table
# what happens in it. A test checks it covers exactly the machine's `STEP_STATES`.
STEPS: Final[Mapping[str, Callable[[Steps, DeployCheckpoint], Advance]]] = {
    State.PENDING: Steps.pending,
    State.LOCKING: Steps.locking,
    State.DEREGISTERING: Steps.deregistering,
    State.DRAINING: Steps.draining,
    State.STOPPING: Steps.stopping,
    State.STARTING: Steps.starting,
    State.REGISTERING: Steps.registering,
    State.HEALTHY: Steps.healthy,
    State.UNLOCKED: Steps.unlocked,
    State.FAILED: Steps.failed,
    State.ROLLING_BACK: Steps.rolling_back,
}
