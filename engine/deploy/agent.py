"""The agent loop: the daemon on every instance.

On start it takes the instance's agent lock (so two agent processes for one instance
never both run deploys), registers the instance (and says so, once, through
`on_registered`: the entry point tells systemd it is ready), and FIRST resumes any deploy
it had in flight. Then it heartbeats, watches its assignment (polling; an optional wake-up
callable shortens the wait) and runs a deploy whenever the assignment changes. An
agent that cannot reach AWS keeps the units it has running and simply waits: only a
deploy changes units (DESIGN.md). A stop request (SIGTERM) is honoured between steps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flotilla.engine.clock import Clock
from flotilla.engine.deploy.runner import DeployRunner, Liveness
from flotilla.engine.errors import FlotillaError, NotFoundError
from flotilla.engine.leases import LeaseKeeper
from flotilla.engine.liveness import DEFAULT_INSTANCE_TTL, expiry_for
from flotilla.engine.ports import Event, EventQueue, LockService, StateStore
from flotilla.engine.records import Instance, Service, deploy_id_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentSettings:
    instance_id: str
    service: str
    agent_version: str
    owner: str  # unique per agent process: instance id, pid and start time
    poll_interval: timedelta = timedelta(seconds=10)
    heartbeat_interval: timedelta = timedelta(seconds=30)
    instance_ttl: timedelta = DEFAULT_INSTANCE_TTL
    agent_lease: timedelta = timedelta(seconds=15)


class Agent:
    """Runs until `stop` is set; every iteration is safe to interrupt.

    The agent is its runner's `Liveness`: the runner stops between steps when a stop was
    requested or this agent lost its lease on the instance, and renews that lease from
    inside its waits. So the runner is made here, from `make_runner(liveness)`.
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        store: StateStore,
        locks: LockService,
        make_runner: Callable[[Liveness], DeployRunner],
        clock: Clock,
        stop: threading.Event,
        wait_for_wakeup: Callable[[float], object] | None = None,
        events: EventQueue | None = None,
        on_registered: Callable[[Instance], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.stop = stop
        self._wait = wait_for_wakeup or self._sleep
        self.events = events
        # Called once, after the first registration of this process and before any resume
        # (which can take long): the entry point tells its supervisor the agent is up.
        self.on_registered = on_registered
        self.lease = LeaseKeeper(
            locks,
            clock,
            name=f"agent/{settings.instance_id}",
            owner=settings.owner,
            duration=settings.agent_lease,
        )
        self._last_heartbeat: datetime | None = None
        self._finished: set[str] = set()  # deploys done in this process, not to be retried
        # A deploy this process started that has not finished: an outage stopped its runner
        # (e.g. between `unlocked` and `done`), so the next iteration resumes it first.
        self._unfinished: tuple[str, str] | None = None  # (deploy id, service)
        self.runner = make_runner(self)

    def _sleep(self, seconds: float) -> None:
        # Wake at once on SIGTERM; the fake clock in tests just moves on.
        if not self.stop.wait(0) and seconds > 0:
            self.clock.sleep(seconds)

    # --- liveness, for the runner ---------------------------------------------------------

    def stop_requested(self) -> bool:
        """Stop between steps on SIGTERM, or once another agent may have taken over."""
        return self.stop.is_set() or self.lease.lost

    def keep_alive(self) -> None:
        """Renew this agent's lease on the instance if due (engine/leases.py's rule)."""
        self.lease.keep()

    def _hold_agent_lock(self) -> bool:
        """Keep `agent/<instance>`, or take it; a standby agent waits for it."""
        if self.lease.held:
            self.lease.keep()
            if self.lease.lost:
                log.warning("lost the agent lock: %s", self.lease.lost_reason)
        else:
            try:
                self.lease.acquire()
            except FlotillaError as failed:
                log.warning("agent lock: %s", failed.message)
        return self.lease.held

    # --- the loop --------------------------------------------------------------------

    def run(self) -> None:
        registered = False
        resumed = False
        while not self.stop.is_set():
            try:
                # Take the lock, or renew it only when a third of it has passed (not at
                # every poll: that would be a DynamoDB write per agent per poll).
                if not self._hold_agent_lock():
                    log.info("another agent runs this instance; standing by")
                    self._wait(self.settings.agent_lease.total_seconds() / 3)
                    continue
                if not registered:
                    instance = self._register()
                    registered = True
                    if self.on_registered is not None:
                        self.on_registered(instance)
                if not resumed:
                    self._resume_unfinished()
                    self._restore_units()
                    resumed = True
                self._heartbeat_if_due()
                self._deploy_if_assigned()
            except FlotillaError as failed:
                # AWS unreachable or throttling: keep the running units, try again later.
                log.warning("agent iteration failed: %s", failed.message)
            self._wait(self.settings.poll_interval.total_seconds())
        try:
            self.lease.release()
        except FlotillaError as failed:
            log.warning("could not release the agent lock: %s", failed.message)

    def _register(self) -> Instance:
        now = self.clock.now()
        instance = Instance(
            self.settings.instance_id,
            self.settings.service,
            self.settings.agent_version,
            registered_at=now,
            heartbeat_at=now,
        )
        instance = self.store.register_instance(
            instance, expires_at=expiry_for(now, self.settings.instance_ttl)
        )
        self._last_heartbeat = now
        log.info("registered instance %s in %s", instance.id, instance.service)
        if self.events is not None:
            # Wakes the scheduler at once; its timer would find the instance anyway.
            detail = {"instance_id": instance.id}
            try:
                self.events.send(Event("instance_joined", instance.service, detail))
            except FlotillaError as unsent:
                log.warning("could not announce the instance: %s", unsent.message)
        return instance

    def _heartbeat_if_due(self) -> None:
        now = self.clock.now()
        if (
            self._last_heartbeat is not None
            and now - self._last_heartbeat < self.settings.heartbeat_interval
        ):
            return
        try:
            self.store.record_heartbeat(
                self.settings.instance_id, now, expiry_for(now, self.settings.instance_ttl)
            )
        except NotFoundError:
            self._register()  # expired and deleted while we were away: join again
        self._last_heartbeat = now

    def _resume_unfinished(self) -> None:
        for checkpoint in self.store.list_instance_deploys(self.settings.instance_id):
            if not checkpoint.finished and not self.stop.is_set():
                log.info("resuming deploy %s in state %s", checkpoint.id, checkpoint.state)
                self.runner.run(checkpoint.id, self.store.get_service(checkpoint.service))

    def _restore_units(self) -> None:
        instance = self.store.get_instance(self.settings.instance_id)
        if instance.current_revision is not None:
            self.runner.restore_units(instance, self.store.get_service(instance.service))

    def _deploy_if_assigned(self) -> None:
        if self._unfinished is not None:
            deploy_id, service_name = self._unfinished
            log.info("resuming deploy %s, stopped by a failed iteration", deploy_id)
            self._run(deploy_id, self.store.get_service(service_name))
            if self._unfinished is not None:
                return  # still not done (stopping, or another runner is ahead): next time
        instance = self.store.get_instance(self.settings.instance_id)
        target = instance.assigned_revision
        if target is None or target == instance.current_revision:
            return
        if deploy_id_for(instance) in self._finished:
            return  # this assignment was tried and rolled back; wait for a new one
        service = self.store.get_service(instance.service)
        checkpoint = self.runner.create(instance, service)
        if checkpoint.finished:
            self._finished.add(checkpoint.id)
        else:
            self._run(checkpoint.id, service)

    def _run(self, deploy_id: str, service: Service) -> None:
        self._unfinished = (deploy_id, service.name)
        checkpoint = self.runner.run(deploy_id, service)
        if checkpoint.finished:
            self._finished.add(checkpoint.id)
            self._unfinished = None
