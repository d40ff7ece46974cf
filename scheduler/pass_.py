"""One scheduler pass: read each service of the shard, plan it, write what changed.

Reads per service: its instances (one query), its recent deploys only while a rollout
is under way (one query), and the deploy of each instance assigned a revision it does
not run when that deploy was not in the listing (one read each). A service whose inputs
did not change plans no write at all. Writes are conditional: the service record through
`modify_service` (re-applied on a conflict only if the weights and rollout state it was
planned on are still the stored ones; otherwise the service is planned again on fresh
inputs, so a concurrent weight change is never overwritten), each assignment on its
`assignment_version`. `guard` is called before every write; it raises `LockLostError`
when leadership is gone, which aborts the pass at once.

Before planning a rolling service the pass reads its gates (`scheduler.gates`): its
CloudWatch alarms, and the webhooks of a step the plan is about to begin (it then plans
again with their answer, which the plan stores). After writing, it publishes the
service's new history entries and deploy outcomes (`scheduler.announce`), opens a span
per decision, and reports when the service must be planned again even if nothing
happens (`PassReport.wake_at`: a bake ends, a gate is retried, a deadline passes).

A service being deleted (`scheduler.deleting`) has its instances unassigned; once its
plan finds nothing holding the record, the pass lists the service's deploys whole (none
may be unfinished), deletes the record conditionally on the version it planned on (a
change since, such as a new instance, plans it again) and publishes `service_deleted`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from opentelemetry import trace

from flotilla.engine.clock import Clock
from flotilla.engine.errors import ConflictError, FlotillaError, LockLostError, NotFoundError
from flotilla.engine.liveness import DEFAULT_INSTANCE_TTL
from flotilla.engine.operations.rules import bounded_history
from flotilla.engine.ports import EventTopic, StateStore, WakeUps
from flotilla.engine.records import Instance, RolloutStatus, Service, deploy_id_for
from flotilla.engine.updates import modify_service
from flotilla.scheduler.announce import Announcer
from flotilla.scheduler.gates import (
    GateReaders,
    call_webhooks,
    read_alarms,
    watches_alarms,
    webhook_payload,
)
from flotilla.scheduler.phases import split_live, unsettled
from flotilla.scheduler.rollout import ServiceInputs, ServicePlan, plan_service
from flotilla.scheduler.rollout_deploys import RolloutDeploys

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("flotilla.scheduler")
ALARMING = frozenset({"rollout_stopped", "reverted", "held"})  # logged as warnings


@dataclass(frozen=True)
class PassSettings:
    instance_ttl: timedelta = DEFAULT_INSTANCE_TTL
    segment: int = 0
    segments: int = 1
    fence_lock: str = "scheduler"
    max_replans: int = 3  # fresh plans of one service per pass when it keeps changing
    # A quiet service (nothing to assign, nothing rolling, every instance settled) whose
    # record did not change is planned again only when one of its instances could have
    # gone silent (its last heartbeat seen plus the TTL), or after this long at the latest:
    # between, events (an instance joined, a deploy ended, EC2 says an instance went) and
    # record changes bring it back at once. This is the net for anything no event said.
    reconcile_after: timedelta = timedelta(hours=1)


@dataclass
class PassReport:
    """What a pass did; services that failed keep their events unacknowledged."""

    services: list[str] = field(default_factory=list)  # planned (successfully or not)
    missing: set[str] = field(default_factory=set)  # named but not stored
    failed: dict[str, str] = field(default_factory=dict)  # service -> error message
    assignments_written: int = 0
    skipped: int = 0  # quiet services a full pass did not need to read
    wake_ups: int = 0  # agents rung after their assignment changed
    service_writes: int = 0
    conflicts: int = 0
    in_flight: int = 0
    waiting: int = 0
    # Services to plan again by a time even if nothing happens: a bake ends, a gate is
    # retried, a progress deadline passes, alarms are read again.
    wake_at: dict[str, datetime] = field(default_factory=dict)
    published: int = 0  # events out
    deleted: list[str] = field(default_factory=list)  # services whose record went

    def handled(self, service: str) -> bool:
        return service in self.missing or (service in self.services and service not in self.failed)


class SchedulerPass:
    """Runs passes over the services of one shard."""

    def __init__(
        self,
        store: StateStore,
        clock: Clock,
        settings: PassSettings,
        guard: Callable[[], int],
        wakeups: WakeUps | None = None,
        gates: GateReaders | None = None,
        topic: EventTopic | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.guard = guard
        # Rings an agent whose assignment changed, so it deploys at once rather than at
        # its next poll; without it agents find their assignment by polling alone.
        self.wakeups = wakeups
        self.gates = gates or GateReaders()
        # Publishes rollout decisions and deploy outcomes; without it, none are.
        self.announcer = None if topic is None else Announcer(topic, store)
        # Services found quiet: the record's version then, and when to look again anyway.
        self._quiet: dict[str, tuple[int, datetime]] = {}
        self.rollout_deploys = RolloutDeploys(store)

    def run(self, names: Collection[str] | None = None) -> PassReport:
        """A pass over the whole shard, or over the named services only."""
        report = PassReport()
        kind = "full" if names is None else "events"
        with _tracer.start_as_current_span(
            "scheduler.pass",
            attributes={
                "flotilla.pass": kind,
                "flotilla.segment": self.settings.segment,
                "flotilla.segments": self.settings.segments,
            },
        ) as span:
            for service in self._services(names, report):
                if names is None and self._still_quiet(service):
                    report.skipped += 1
                    report.services.append(service.name)
                    continue
                report.services.append(service.name)
                try:
                    self._service(service, report)
                except LockLostError:
                    raise
                except FlotillaError as failed:
                    report.failed[service.name] = failed.message
                    log.warning("pass over %s failed: %s", service.name, failed.message)
            span.set_attributes(
                {
                    "flotilla.services": len(report.services),
                    "flotilla.skipped": report.skipped,
                    "flotilla.assignments_written": report.assignments_written,
                    "flotilla.service_writes": report.service_writes,
                    "flotilla.waiting": report.waiting,
                    "flotilla.failed_services": len(report.failed),
                }
            )
        return report

    def _services(self, names: Collection[str] | None, report: PassReport) -> list[Service]:
        if names is None:
            return self.store.list_services(
                segment=self.settings.segment, segments=self.settings.segments
            )
        found = []
        for name in sorted(set(names)):
            try:
                found.append(self.store.get_service(name))
            except NotFoundError:
                report.missing.add(name)
        return found

    def _service(self, service: Service, report: PassReport) -> None:
        for attempt in range(self.settings.max_replans):
            if attempt:
                service = self.store.get_service(service.name)
            inputs = self._inputs(service)
            plan = self._plan(inputs)
            stored = service
            if plan.updated is not None:
                if not self._store_service(plan, plan.updated):
                    continue  # the record changed under the plan: plan again on fresh inputs
                report.service_writes += 1
                stored = plan.updated
            self._assign(plan, report)
            if plan.deletable and self._delete(stored, inputs, report):
                return
            report.in_flight += plan.in_flight
            report.waiting += plan.waiting
            if plan.wake_at is not None:
                report.wake_at[service.name] = plan.wake_at
            if self.announcer is not None:
                report.published += self.announcer.announce(
                    stored, inputs.deploys.values(), inputs.now
                )
            self._note_quiet(inputs, plan)
            return
        log.info("%s kept changing during this pass; the next pass plans it again", service.name)

    def _delete(self, service: Service, inputs: ServiceInputs, report: PassReport) -> bool:
        """Delete a service being deleted that nothing holds any more (the module's doc);
        False if it must wait (an unfinished deploy) or changed under the plan."""
        deploys = self.store.list_deploys(service.name)
        if any(not deploy.finished for deploy in deploys):
            return False
        self.guard()
        try:
            self.store.delete_service(service.name, expected_version=service.version)
        except ConflictError:
            report.conflicts += 1  # changed since we read it: planned again next pass
            return False
        except NotFoundError:
            return True  # deleted already (by another leader's pass, or an older CLI)
        self._quiet.pop(service.name, None)
        self.rollout_deploys.forget_service(service.name)
        report.deleted.append(service.name)
        log.info("%s: deleted: every instance was unassigned", service.name)
        with _tracer.start_as_current_span(
            "scheduler.decision",
            attributes={
                "flotilla.service": service.name,
                "flotilla.decision": "service_deleted",
                "flotilla.reason": "every instance was unassigned",
            },
        ):
            pass
        if self.announcer is not None:
            report.published += self.announcer.announce(service, deploys, inputs.now)
            report.published += self.announcer.deleted(service, inputs.now)
        return True

    def _plan(self, inputs: ServiceInputs) -> ServicePlan:
        """Plan the service, reading its gates first: its alarms when it rolls, and the
        webhooks of a step the plan is about to begin (then it is planned again)."""
        service = inputs.service
        if self.announcer is not None:
            announced = self.announcer.published_until(service.name)
            inputs = dataclasses.replace(inputs, announced=announced)
        if watches_alarms(service):
            inputs = dataclasses.replace(inputs, readings=read_alarms(self.gates, service.rollout))
        fence = self.guard()
        plan = plan_service(inputs, fence_lock=self.settings.fence_lock, fence=fence)
        called: set[int] = set()
        while plan.needs_webhooks is not None and self.gates.webhooks is not None:
            step = plan.needs_webhooks
            if step in called:
                break
            called.add(step)
            state = (plan.updated or service).rollout_state
            payload = webhook_payload(service, state, plan.steps, step)
            answer = call_webhooks(
                self.gates.webhooks, service.rollout.webhooks, payload, step=step, at=inputs.now
            )
            readings = dataclasses.replace(inputs.readings, webhooks=answer)
            inputs = dataclasses.replace(inputs, readings=readings)
            plan = plan_service(inputs, fence_lock=self.settings.fence_lock, fence=self.guard())
        return plan

    def forget(self) -> None:
        """Drop what earlier passes remembered: the next pass reads every service whole."""
        self._quiet.clear()
        self.rollout_deploys.forget()
        if self.announcer is not None:
            self.announcer.forget()

    def _still_quiet(self, service: Service) -> bool:
        quiet = self._quiet.get(service.name)
        if quiet is None:
            return False
        version, recheck_at = quiet
        return version == service.version and self.clock.now() < recheck_at

    def _note_quiet(self, inputs: ServiceInputs, plan: ServicePlan) -> None:
        """Remember a service that needs nothing; forget one that does."""
        name = plan.service.name
        quiet = (
            plan.writes_nothing
            and plan.in_flight == 0
            and plan.waiting == 0
            and plan.service.rollout_state.status is RolloutStatus.COMPLETE
            and not any(unsettled(instance) for instance in inputs.live)
            and not any(instance.assigned_revision for instance in inputs.dead)
            and not (self.announcer is not None and self.announcer.behind(name))
        )
        if quiet:
            recheck_at = inputs.now + self.settings.reconcile_after
            if inputs.live:
                earliest = min(instance.heartbeat_at for instance in inputs.live)
                recheck_at = min(recheck_at, earliest + self.settings.instance_ttl)
            self._quiet[name] = (plan.service.version, recheck_at)
        else:
            self._quiet.pop(name, None)

    def _inputs(self, service: Service) -> ServiceInputs:
        now = self.clock.now()
        live, dead = split_live(
            self.store.list_instances(service.name), now, self.settings.instance_ttl
        )
        deploys = self.rollout_deploys.of(service, now)
        for instance in live:
            deploy_id = deploy_id_for(instance)
            if unsettled(instance) and deploy_id not in deploys:
                with contextlib.suppress(NotFoundError):  # not started by its agent yet
                    deploys[deploy_id] = self.store.get_deploy(deploy_id)
        return ServiceInputs(service, live, dead, deploys, now)

    def _store_service(self, plan: ServicePlan, planned: Service) -> bool:
        """Store the plan's record changes; False if the record changed under the plan."""
        base = plan.service

        def change(current: Service) -> Service:
            token = self.guard()  # before every write attempt
            fence = current.rollout_state
            if fence.fence_lock == self.settings.fence_lock and fence.fence > token:
                raise LockLostError(
                    f"{current.name} was written by a newer leader (token {fence.fence} > "
                    f"{token}); this scheduler stands down"
                )
            if (
                current.weights != base.weights
                or current.rollout_state != base.rollout_state
                or current.paused != base.paused
                or current.rollout != base.rollout
                or current.promotion != base.promotion
            ):
                return current  # planned on other inputs: write nothing, plan again
            return dataclasses.replace(
                current,
                weights=planned.weights,
                rollout_state=planned.rollout_state,
                paused=planned.paused,  # the failure action `hold` pauses the service
                history=bounded_history(current.history, plan.new_history),
            )

        stored = modify_service(self.store, base.name, change)
        if (stored.rollout_state, stored.weights, stored.paused) != (
            planned.rollout_state,
            planned.weights,
            planned.paused,
        ):
            return False
        state = planned.rollout_state
        for entry in plan.new_history:
            alarming = entry.kind in ALARMING
            level = logging.WARNING if alarming else logging.INFO
            log.log(level, "%s: %s: %s", base.name, entry.kind, entry.reason)
            # One span per decision, under the pass's: the trace shows what was decided when.
            with _tracer.start_as_current_span(
                "scheduler.decision",
                attributes={
                    "flotilla.service": base.name,
                    "flotilla.decision": entry.kind,
                    "flotilla.reason": entry.reason,
                    "flotilla.rollout_status": state.status.value,
                    "flotilla.step": state.step + 1,
                    "flotilla.steps": len(plan.steps),
                },
            ):
                pass
        return True

    def _assign(self, plan: ServicePlan, report: PassReport) -> None:
        written = 0
        gone = plan.leaving
        changed: list[Instance] = []
        for assignment in plan.assignments:
            self.guard()
            try:
                stored = self.store.set_assignment(
                    plan.service.name,
                    assignment.instance_id,
                    assignment.revision,
                    expected_version=assignment.expected_version,
                )
                written += 1
                changed.append(stored)
            except ConflictError:
                report.conflicts += 1  # changed since we read it: the next pass sees it
            except NotFoundError:
                pass  # the instance went away
        report.wake_ups += self._wake(changed, gone)
        report.assignments_written += written
        if written or plan.waiting:
            log.info(
                "%s: %d assignment(s) written, %d waiting, %d/%d in flight",
                plan.service.name,
                written,
                plan.waiting,
                plan.in_flight,
                plan.slots,
            )

    def _wake(self, changed: list[Instance], leaving: frozenset[str] | set[str]) -> int:
        """Ring the agents of changed assignments, all at once (how many were rung);
        close the channels of instances that leave their service. Best effort: the
        agents' polls are the net."""
        if self.wakeups is None:
            return 0
        rings: dict[str, str] = {}  # address -> instance
        for instance in changed:
            address = instance.wake_address
            if address is None:
                continue
            if instance.id not in leaving:
                rings[address] = instance.id
                continue
            try:
                self.wakeups.close(address)
            except FlotillaError as failed:
                log.info(
                    "could not close the wake-up channel of %s: %s", instance.id, failed.message
                )
        failures = self.wakeups.ring_all(list(rings))
        for address, error in failures.items():
            log.info("could not wake %s: %s", rings[address], error.message)
        return len(rings) - len(failures)
