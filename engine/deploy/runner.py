"""The deploy runner: load the checkpoint, perform the state's step, advance, persist.

The loop, for one deploy:
1. load the checkpoint and restore the state machine once from its stored facts (state,
   `failed_in`, a failed rollback); if the last runner was interrupted in a state, record
   the interruption and a `resume` span linked to the interrupted one;
2. perform the current state's step through the ports (idempotent, see `steps.STEPS`);
3. report the step's result to the machine, which fires the trigger it means, and write
   the checkpoint conditionally on its version; a runner that loses that race stops at
   once (another one is ahead).
The machine decides the flow (machines/deploy.py); the runner only performs it. Deadlines
and attempt counts live in the checkpoint, so a resumed deploy gets no fresh budget, and a
deploy whose agent keeps dying in one state gives up and rolls back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from opentelemetry import trace

from flotilla.engine import units as unit_names
from flotilla.engine.checkpoint import DeployCheckpoint, HookOutcome, Transition
from flotilla.engine.deploy import adoption, telemetry
from flotilla.engine.deploy.reporting import report_finished
from flotilla.engine.deploy.retry import with_retries
from flotilla.engine.deploy.revision_cache import RevisionCache
from flotilla.engine.deploy.steps import STEPS, Advance, Ports, StepFailed, Steps, StepSettings
from flotilla.engine.errors import (
    AlreadyExistsError,
    ConflictError,
    FlotillaError,
    MisfiledItemError,
)
from flotilla.engine.ports import EventQueue
from flotilla.engine.records import Instance, Service, deploy_id_for
from flotilla.machines import deploy as machine
from flotilla.machines.deploy import DeployMachine, StepResult

log = logging.getLogger(__name__)
T = TypeVar("T")

# Fault injection points for crash tests: (point, state) with point "before-step" or
# "after-effect" (the step's effect is done, its checkpoint not yet written).
FaultHook = Callable[[str, str], None]


class Liveness(Protocol):
    """What the runner's owner (the agent) tells it while a deploy runs: whether to stop
    between steps, and how to keep the owner's own lease alive from inside long waits."""

    def stop_requested(self) -> bool: ...

    def keep_alive(self) -> None: ...


class AlwaysLive:
    """Liveness for a runner nobody stops (tests, tools): never stop, nothing to keep."""

    def stop_requested(self) -> bool:
        return False

    def keep_alive(self) -> None:
        return None


@dataclass(frozen=True)
class RunnerSettings:
    max_attempts_per_state: int = 3
    steps: StepSettings = field(default_factory=StepSettings)


def _no_fault(_point: str, _state: str) -> None:
    return None


class DeployRunner:
    """Runs the deploys of one instance to completion, surviving a crash at every step."""

    def __init__(
        self,
        ports_for: Callable[[Service], Ports],
        *,
        settings: RunnerSettings | None = None,
        events: EventQueue | None = None,
        liveness: Liveness | None = None,
        fault: FaultHook = _no_fault,
    ) -> None:
        self.ports_for = ports_for
        self.settings = settings or RunnerSettings()
        self.events = events
        self.liveness: Liveness = liveness or AlwaysLive()
        self.fault = fault
        # Deploys this runner created, with the version it wrote: a run that starts from
        # one of them continues it; any other open state is an interrupted runner's.
        self._created: dict[str, int] = {}
        self._revisions = RevisionCache()  # shared by every deploy's steps

    # --- creating --------------------------------------------------------------------

    def create(self, instance: Instance, service: Service) -> DeployCheckpoint:
        """The checkpoint for the instance's current assignment, created once.

        `pending`'s step (it only sets the overall deadline) is performed here and the
        checkpoint is created already past it, in `locking`: creating it is the one
        conditional write of that transition, so a deploy costs no separate write for it.
        """
        if instance.assigned_revision is None and instance.current_revision is None:
            raise FlotillaError(f"instance {instance.id} has no assignment and runs nothing")
        adoption.check_instance(instance, service=service.name, instance_id=instance.id)
        ports = self.ports_for(service)
        deploy_id = deploy_id_for(instance)
        now = ports.clock.now()
        checkpoint = DeployCheckpoint(
            id=deploy_id,
            service=instance.service,
            instance_id=instance.id,
            from_revision=instance.current_revision,
            to_revision=instance.assigned_revision,
            state=machine.INITIAL_STATE,
            machine_version=machine.MACHINE_VERSION,
            created_at=now,
            updated_at=now,
            history=(Transition(machine.INITIAL_STATE, now),),
        )
        checkpoint = dataclasses.replace(
            checkpoint, trace_parent=telemetry.start_trace("deploy", _attributes(checkpoint))
        )
        deploy = DeployMachine(
            has_load_balancer=service.load_balancer is not None,
            unassigning=checkpoint.unassigning,
        )
        steps = self._steps(ports, service, deploy_id)
        try:
            created = self._step(ports, steps, deploy, checkpoint, create=True)
        except AlreadyExistsError:
            try:
                found = _retried(ports, lambda: ports.store.get_deploy(deploy_id))
            except MisfiledItemError as misfiled:
                raise adoption.misfiled_checkpoint(deploy_id, misfiled) from misfiled
            adoption.check_checkpoint(
                found,
                service=service.name,
                instance_id=instance.id,
                to_revision=checkpoint.to_revision,
            )
            return found
        self._created[created.id] = created.version
        return created

    # --- running ---------------------------------------------------------------------

    def run(
        self, deploy_id: str, service: Service, *, known: DeployCheckpoint | None = None
    ) -> DeployCheckpoint:
        """Advance the deploy until it is done, a stop is requested, or another runner is ahead.

        `known` is the checkpoint as its caller just read or wrote it (`create`): the run
        starts from it instead of reading it again. A stale one costs nothing worse than a
        conflict at the first write, which stops this run as any lost race does.
        """
        ports = self.ports_for(service)
        if known is not None and known.id == deploy_id:
            checkpoint = known
        else:
            checkpoint = _retried(ports, lambda: ports.store.get_deploy(deploy_id))
        adoption.check_checkpoint(
            checkpoint, service=service.name, instance_id=checkpoint.instance_id
        )
        if checkpoint.finished:
            return checkpoint
        try:
            deploy = DeployMachine.restore(
                checkpoint.machine_version,
                checkpoint.state,
                has_load_balancer=service.load_balancer is not None,
                failed_in=checkpoint.failed_in,
                rollback_failed=checkpoint.rollback_error is not None,
                unassigning=checkpoint.unassigning,
                traffic_kept=checkpoint.traffic_kept,
            )
        except machine.CannotResume as cannot:
            raise FlotillaError(f"deploy {deploy_id}: {cannot}") from cannot
        steps = self._steps(ports, service, deploy_id)
        try:
            if self._created.pop(checkpoint.id, None) != checkpoint.version:
                checkpoint = self._mark_resume(ports, checkpoint)
            while not checkpoint.finished:
                if self.liveness.stop_requested():
                    log.info("stopping between steps", extra=_log_fields(checkpoint))
                    break
                checkpoint = self._step(ports, steps, deploy, checkpoint)
        except ConflictError as ahead:
            log.warning("another runner is ahead; stopping: %s", ahead.message)
        finally:
            telemetry.flush()
        return checkpoint

    def restore_units(self, instance: Instance, service: Service) -> bool:
        """Start the current revision's units again if they are gone (after a reboot: unit
        and environment files live on tmpfs). Returns whether anything was restored."""
        current = instance.current_revision
        ports = self.ports_for(service)
        if current is None:
            return False
        # Any owned unit means they were not wiped: a deploy may keep units of earlier
        # revisions under their names (engine/unit_plan.py), so none may be `current`'s own.
        if _retried(ports, ports.runtime.owned_units):
            return False
        # Not a deploy: no slot is ever taken under this owner.
        steps = self._steps(ports, service, f"restore/{instance.id}")
        attributes = {
            "flotilla.service": service.name,
            "flotilla.instance": instance.id,
            "flotilla.to_revision": current,
        }
        with telemetry.call_span("restore", attributes):
            log.info("the units of revision %s are gone; starting them again", current[:12])
            # Container units run the digests their deploys pinned, not a tag that moved;
            # restored under the revision's own names, as every unit here is.
            pins = steps.units.running_pins(instance.id, current)
            images = {unit_names.installed_name(unit, current): pin for unit, pin in pins.items()}
            steps.units.start(current, images=images)
        return True

    def _steps(self, ports: Ports, service: Service, deploy_id: str) -> Steps:
        return Steps(
            ports,
            service,
            self.settings.steps,
            deploy_id=deploy_id,
            keep_alive=self.liveness.keep_alive,
            on_retry=_retry_event,
            revisions=self._revisions,
        )

    def _mark_resume(self, ports: Ports, checkpoint: DeployCheckpoint) -> DeployCheckpoint:
        """A state left open by an earlier runner means that runner was interrupted."""
        last = checkpoint.history[-1] if checkpoint.history else None
        if last is None or last.ended_at is not None or checkpoint.state == machine.INITIAL_STATE:
            return checkpoint
        now = ports.clock.now()
        attempt = checkpoint.attempts.get(checkpoint.state, 1) + 1
        with telemetry.child_span(
            checkpoint.trace_parent,
            "resume",
            {**_attributes(checkpoint), "flotilla.attempt": attempt},
            links=telemetry.link_to(checkpoint.trace_parent, checkpoint.last_span_id),
        ) as span:
            interrupted = dataclasses.replace(
                last, ended_at=checkpoint.updated_at, error="interrupted: the agent stopped here"
            )
            resumed = Transition(checkpoint.state, now, attempt=attempt, resumed=True)
            log.info("resuming an interrupted deploy", extra=_log_fields(checkpoint))
            marked = dataclasses.replace(
                checkpoint,
                updated_at=now,
                attempts={**checkpoint.attempts, checkpoint.state: attempt},
                last_span_id=telemetry.span_id_of(span),
                history=(*checkpoint.history[:-1], interrupted, resumed),
            )
            return _retried(ports, lambda: ports.store.update_deploy(marked))

    def _step(
        self,
        ports: Ports,
        steps: Steps,
        deploy: DeployMachine,
        checkpoint: DeployCheckpoint,
        *,
        create: bool = False,
    ) -> DeployCheckpoint:
        state = checkpoint.state
        attempt = checkpoint.attempts.get(state, 1)
        attributes = {**_attributes(checkpoint), "flotilla.attempt": attempt}
        with telemetry.child_span(checkpoint.trace_parent, f"deploy.{state}", attributes) as span:
            self.fault("before-step", state)
            reason: str | None = None
            skip = deploy.skip_reason  # the machine's word: this step is not performed
            try:
                if skip is not None:
                    advance = Advance(result=StepResult.SKIPPED)
                else:
                    advance = self._perform(ports, steps, deploy, checkpoint, attempt)
            except StepFailed as failed:
                reason = failed.message
            except FlotillaError as failed:
                if failed.retryable or not deploy.working:
                    raise  # an outage: leave the state open, a later run resumes it
                reason = failed.message  # anything else in a working state fails the deploy
            if reason is not None:
                advance = Advance(result=StepResult.FAILED)
                telemetry.mark_error(span, reason)
            self.fault("after-effect", state)
            checkpoint = self._advance(
                ports, deploy, checkpoint, advance, reason, span,
                hooks=steps.hooks.take(), create=create,
            )  # fmt: skip
        # After the state's span has ended: a SIGKILL during the next step must not lose it.
        telemetry.flush()
        if checkpoint.finished:
            self._report(checkpoint)
        return checkpoint

    def _perform(
        self,
        ports: Ports,
        steps: Steps,
        deploy: DeployMachine,
        checkpoint: DeployCheckpoint,
        attempt: int,
    ) -> Advance:
        if deploy.can_fail and attempt > self.settings.max_attempts_per_state:
            raise StepFailed(
                f"the agent stopped {attempt - 1} times in state {checkpoint.state}; "
                "giving up on it"
            )
        overall = checkpoint.deadlines.get("overall")
        if deploy.working and overall is not None and ports.clock.now() > overall:
            raise StepFailed(
                f"the deploy ran past its overall timeout ({self.settings.steps.overall_timeout})"
            )
        relocked = steps.slot.hold(checkpoint) if deploy.holds_slot else None
        advance = STEPS[checkpoint.state](steps, checkpoint)
        if relocked is not None and advance.lease is None:
            advance = dataclasses.replace(advance, lease=relocked)
        return advance

    def _advance(
        self,
        ports: Ports,
        deploy: DeployMachine,
        checkpoint: DeployCheckpoint,
        advance: Advance,
        reason: str | None,
        span: trace.Span,
        *,
        hooks: tuple[HookOutcome, ...] = (),
        create: bool = False,
    ) -> DeployCheckpoint:
        now = ports.clock.now()
        # The reason is the deploy's error, or, in the rollback, why the rollback failed.
        rolling_back = deploy.rolling_back
        error, rollback_error = (None, reason) if rolling_back else (reason, None)
        skip_reason = deploy.skip_reason if advance.skipped else None
        if advance.units is not None and checkpoint.units is None:
            deploy.note_traffic_kept(advance.units.traffic_kept)
        new_state = deploy.advance(advance.result)
        span_id = telemetry.span_id_of(span)
        if advance.skipped:  # e.g. load-balancer states of a service without one
            telemetry.mark_skipped(span, skip_reason)
        if advance.units is not None and checkpoint.units is None:
            telemetry.mark_unit_plan(span, advance.units)
        closed = dataclasses.replace(
            checkpoint.history[-1],
            ended_at=now,
            error=reason,
            skipped=advance.skipped,
            skip_reason=skip_reason,
            span_id=span_id,
            hooks=hooks,
        )
        history = (*checkpoint.history[:-1], closed)
        if not deploy.finished:
            history = (*history, Transition(new_state, now))
        updated = dataclasses.replace(
            checkpoint,
            state=new_state,
            updated_at=now,
            deadlines={**advance.deadlines, **checkpoint.deadlines},
            attempts={**checkpoint.attempts, new_state: 1},
            lease=None if advance.clear_lease else (advance.lease or checkpoint.lease),
            last_span_id=span_id,
            failed_in=deploy.failed_in,
            error=checkpoint.error or error,
            rollback_error=checkpoint.rollback_error or rollback_error,
            outcome=deploy.outcome if deploy.finished else None,
            history=history,
            units=checkpoint.units or advance.units,
            images=checkpoint.images if checkpoint.images is not None else advance.images,
        )
        if create:  # the first write: the checkpoint does not exist yet
            stored = _retried(ports, lambda: ports.store.create_deploy(updated))
        else:
            stored = _retried(
                ports,
                lambda: ports.store.update_deploy(
                    updated, current=advance.current, release=advance.release
                ),
            )
        log.info(
            "deploy %s: %s -> %s", stored.id, checkpoint.state, new_state, extra=_log_fields(stored)
        )
        return stored

    def _report(self, checkpoint: DeployCheckpoint) -> None:
        if self.events is not None:
            report_finished(self.events, checkpoint)


def _retried(ports: Ports, call: Callable[[], T]) -> T:
    """A checkpoint read or write, retried through throttling (never through a conflict)."""
    return with_retries(call, clock=ports.clock, on_retry=_retry_event)


def _retry_event(error: BaseException, attempt: int) -> None:
    """Retries show up as events on the span of the call being retried."""
    trace.get_current_span().add_event("retry", {"attempt": attempt, "error": type(error).__name__})


# Span attributes (identifiers only) and the fields of every deploy log line.
_attributes = telemetry.deploy_attributes
_log_fields = telemetry.deploy_log_fields
