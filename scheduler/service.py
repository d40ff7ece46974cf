"""The scheduler daemon's loop: lead (or stand by), pass on a timer and at once on events.

A standby only polls the leader lease: it never receives from the queue, so it can
neither consume nor drop an event. The leader runs a full pass of its shard as soon as
it becomes leader and then every `interval`; between passes it long-polls the queue (never
longer than its lease allows before renewal) and runs a pass over the services the events
name. An event is acknowledged only after the pass that handled its service succeeded,
so one received by a leader that dies, loses its lease or fails on that service comes
back after the visibility timeout to whoever leads then. Events are wake-ups, not data:
every pass reads the truth from the store, so handling one twice is harmless.

With shards (`segments > 1`) an event may name a service of another shard; a leader
acknowledges only events of its own services (or of services that do not exist) and
leaves the others to reappear for their shard's leader.

A pass may also say when a service must be planned again although nothing happens to it
(`PassReport.wake_at`: a bake ends, a webhook gate is called again, a progress deadline
passes, alarms are read again); the leader then runs a pass over that service at that
time, between full passes. These timers are kept in memory only: what they wait for is
stored in the rollout state, so a new leader finds it again at its first full pass.

The first leadership attempt that reaches the lock service, leading or not, is reported
once through `on_ready` (the entry point tells systemd that the scheduler is up).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flotilla.engine.clock import Clock
from flotilla.engine.errors import FlotillaError, LockLostError, NotFoundError
from flotilla.engine.liveness import DEFAULT_INSTANCE_TTL
from flotilla.engine.ports import (
    INSTANCE_LEFT,
    INSTANCE_STATE,
    Event,
    EventQueue,
    EventTopic,
    LockService,
    StateStore,
    WakeUps,
)
from flotilla.scheduler.gates import GateReaders
from flotilla.scheduler.leader import Leadership, lock_name
from flotilla.scheduler.pass_ import PassReport, PassSettings, SchedulerPass

log = logging.getLogger(__name__)

MAX_POLL = timedelta(seconds=20)  # SQS's longest long poll


@dataclass(frozen=True)
class SchedulerSettings:
    owner: str  # unique per scheduler process
    segment: int = 0
    segments: int = 1
    interval: timedelta = timedelta(seconds=15)  # between full passes
    lease: timedelta = timedelta(seconds=15)
    instance_ttl: timedelta = DEFAULT_INSTANCE_TTL
    max_events: int = 10  # per receive (SQS's most)
    # Whatever else is already waiting when an event arrives is handled in the same pass
    # (up to `max_batch` events): the deploys of a wave end within moments of each other,
    # and events pile up while a pass runs, so the costlier the passes, the more each one
    # takes in. Nothing waits for more: SQS long-polls whole seconds, and a refill of a
    # slot should not wait a second for ends that may never come.
    max_batch: int = 500
    retry_after: timedelta = timedelta(seconds=2)  # after a failed iteration

    def __post_init__(self) -> None:
        if self.segments < 1 or not 0 <= self.segment < self.segments:
            raise ValueError(
                f"segment {self.segment} of {self.segments}: need 0 <= segment < segments"
            )
        if self.interval <= timedelta(0) or self.lease <= timedelta(0):
            raise ValueError("interval and lease must be positive")

    @property
    def lock_name(self) -> str:
        return lock_name(self.segment, self.segments)


class Scheduler:
    """One scheduler process. `run()` loops until `stop` is set; `step()` is one iteration."""

    def __init__(
        self,
        settings: SchedulerSettings,
        *,
        store: StateStore,
        locks: LockService,
        events: EventQueue,
        clock: Clock,
        stop: threading.Event | None = None,
        wait: Callable[[float], None] | None = None,
        on_ready: Callable[[bool], None] | None = None,
        wakeups: WakeUps | None = None,
        gates: GateReaders | None = None,
        topic: EventTopic | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.clock = clock
        self.stop = stop or threading.Event()
        self._wait = wait or clock.sleep
        # Called once, with whether this scheduler leads, after its first leadership
        # attempt that reached the lock service: the entry point tells systemd it is up.
        self._on_ready = on_ready
        self.leadership = Leadership(
            locks, clock, name=settings.lock_name, owner=settings.owner, lease=settings.lease
        )
        self.passes = SchedulerPass(
            store,
            clock,
            PassSettings(
                instance_ttl=settings.instance_ttl,
                segment=settings.segment,
                segments=settings.segments,
                fence_lock=settings.lock_name,
            ),
            guard=self.leadership.guard,
            wakeups=wakeups,
            gates=gates,
            topic=topic,
        )
        self._next_full_pass: datetime | None = None
        self._timers: dict[str, datetime] = {}  # service -> plan it again by then
        self._known: set[str] = set()  # the services of this shard, as of the last full pass
        self.last_report: PassReport | None = None

    # --- the loop --------------------------------------------------------------------

    def run(self) -> None:
        log.info("scheduler %s starting for %s", self.settings.owner, self.settings.lock_name)
        try:
            while not self.stop.is_set():
                self.step()
        finally:
            self.leadership.step_down()
            log.info("scheduler %s stopped", self.settings.owner)

    def step(self) -> None:
        if not self.leadership.is_leader:
            if not self._try_to_lead():
                self._wait(self._standby_poll())
                return
            self._next_full_pass = None  # a new leader first reconciles everything
            self._timers.clear()
            self.passes.forget()  # what an earlier term remembered may be stale now
        try:
            self.leadership.keep()
            if self._next_full_pass is None or self.clock.now() >= self._next_full_pass:
                self._full_pass()
            else:
                self._timed_pass()
            self._receive_and_handle()
        except LockLostError as lost:
            self.leadership.forget()
            log.warning("no longer leading %s: %s", self.settings.lock_name, lost.message)
        except FlotillaError as failed:
            log.warning("scheduler iteration failed: %s", failed.message)
            self._wait(self.settings.retry_after.total_seconds())

    def _try_to_lead(self) -> bool:
        try:
            leading = self.leadership.try_acquire()
        except FlotillaError as failed:
            log.warning("cannot reach the lock service: %s", failed.message)
            return False
        if self._on_ready is not None:
            on_ready, self._on_ready = self._on_ready, None
            on_ready(leading)
        return leading

    def _standby_poll(self) -> float:
        # A third of the lease: a standby takes over at most that long after it lapsed.
        return self.settings.lease.total_seconds() / 3

    # --- passes ----------------------------------------------------------------------

    def _full_pass(self) -> PassReport:
        started = self.clock.now()
        report = self.passes.run()
        self._known = set(report.services)
        self._next_full_pass = started + self.settings.interval
        self._note(report)
        return report

    def _timed_pass(self) -> None:
        """A pass over the services whose timer is due (the module's doc)."""
        now = self.clock.now()
        due = {name for name, at in self._timers.items() if at <= now}
        if due:
            log.debug("timers due for %s", ", ".join(sorted(due)))
            self._note(self.passes.run(due))

    def _note(self, report: PassReport) -> None:
        """Keep the timers of the services a pass planned (a failed one is retried by the
        next full pass)."""
        self.last_report = report
        for name in report.services:
            self._timers.pop(name, None)
        for name in report.missing:
            self._timers.pop(name, None)
        self._timers.update(report.wake_at)

    def _wake_at(self) -> datetime:
        """The next full pass or the earliest timer, whichever comes first."""
        wake_at = self._next_full_pass or self.clock.now()
        return min([wake_at, *self._timers.values()])

    def _receive_and_handle(self) -> None:
        wake_at = self._wake_at()
        budget = min(
            (wake_at - self.clock.now()).total_seconds(),
            self.leadership.seconds_until_renewal(),
            MAX_POLL.total_seconds(),
        )
        # SQS waits whole seconds. A poll rounded down would leave the rest of the budget to
        # a blind sleep, in which an operator's event waits up to a second; rounded up, it
        # overshoots the next pass or the lease's renewal by under a second, which both
        # allow (a lease is renewed once a third of it has passed, and lost only after all).
        budget = float(math.ceil(max(0.0, budget)))
        events = self.events.receive(
            wait=timedelta(seconds=budget), max_events=self.settings.max_events
        )
        if events:
            self._handle(self._gather(events))
            return
        # A queue may answer early (SQS waits whole seconds): sleep out the rest.
        rest = min(
            (wake_at - self.clock.now()).total_seconds(), self.leadership.seconds_until_renewal()
        )
        if rest > 0 and not self.stop.is_set():
            self._wait(rest)

    def _gather(self, events: list[Event]) -> list[Event]:
        """`events` and whatever is already waiting, up to `max_batch`. Only a full answer
        says more may wait: after a partial one, asking again would cost every wake-up
        (a slot's refill) a call to find nothing, and what did arrive meanwhile is taken
        by the next receive, which answers at once."""
        more = events
        while len(more) == self.settings.max_events and len(events) < self.settings.max_batch:
            more = self.events.receive(wait=timedelta(0), max_events=self.settings.max_events)
            events = events + more
        return events

    def _handle(self, events: list[Event]) -> None:
        events = [self._resolved(event) for event in events]
        # An EC2 instance that is not (or no longer) ours: nothing to do.
        self._ack([event for event in events if not event.service])
        events = [event for event in events if event.service]
        if not events:
            return
        names = {event.service for event in events}
        log.info("woken by %d event(s) for %s", len(events), ", ".join(sorted(names)))
        # A service this shard has not seen yet calls for a full pass of the shard.
        if names <= self._known:
            report = self.passes.run(names)
            self._note(report)
        else:
            report = self._full_pass()
        self._ack([event for event in events if self._ours_and_handled(event, report)])

    def _resolved(self, event: Event) -> Event:
        """An EC2 notification that a machine is going marks its instance gone at once
        (so this pass takes its assignment away and closes its wake-up queue) and is
        handled as an event of its service; one about another machine names no service."""
        if event.kind == INSTANCE_STATE:
            return event
        if event.kind != INSTANCE_LEFT or event.service:
            return event
        instance_id = str(event.detail.get("instance_id", ""))
        try:
            instance = self.store.mark_instance_left(instance_id, self.clock.now())
        except NotFoundError:
            return event
        log.info("EC2 says %s is %s", instance_id, event.detail.get("state"))
        return dataclasses.replace(event, service=instance.service)

    def _ours_and_handled(self, event: Event, report: PassReport) -> bool:
        if report.handled(event.service):
            return True
        if event.service in report.failed:
            return False  # comes back after the visibility timeout
        if self.settings.segments == 1:
            return True  # a full pass saw every service: this one does not exist
        try:
            self.store.get_service(event.service)
        except NotFoundError:
            return True
        return False  # another shard's service: leave it to that shard's leader

    def _ack(self, events: list[Event]) -> None:
        """Together: the deploy ends of a wave, handled in one pass, cost one call per ten."""
        if not events:
            return
        try:
            self.events.ack(*events)
        except FlotillaError as failed:
            # They come back and are handled again: harmless, passes are idempotent.
            log.warning("could not acknowledge %d event(s): %s", len(events), failed.message)
