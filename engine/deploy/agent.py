"""The agent loop: the daemon on every instance.

On start it takes its instance (engine/deploy/agent_lease.py: registering the instance
and holding it in one write, so two agent processes never both run its deploys; a
predecessor proven dead is replaced at once), says so once through `on_registered` (the
entry point tells systemd it is ready), and FIRST resumes any deploy it had in flight.
Then it keeps its hold, which is its heartbeat (one write per third of the lease), watches
its assignment (polling; an optional wake-up callable shortens the wait) and runs a deploy
whenever the assignment changes. An agent that cannot reach AWS keeps the units it has
running and simply waits: only a deploy changes units (DESIGN.md). A stop request
(SIGTERM) is honoured between steps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.clock import Clock
from flotilla.engine.deploy import adoption
from flotilla.engine.deploy.agent_lease import InstanceLease, ProvenDead, lock_name
from flotilla.engine.deploy.errors import AdoptionRefusedError
from flotilla.engine.deploy.runner import DeployRunner, Liveness
from flotilla.engine.errors import FlotillaError, MisfiledItemError, NotFoundError
from flotilla.engine.leases import LeaseKeeper
from flotilla.engine.liveness import DEFAULT_AGENT_LEASE, DEFAULT_INSTANCE_TTL
from flotilla.engine.ports import Event, EventQueue, StateStore, WakeUps
from flotilla.engine.records import Instance, Service, deploy_id_for, instance_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentSettings:
    instance_id: str
    service: str
    agent_version: str
    owner: str  # unique per agent process (adapters/process_identity.py on a real machine)
    poll_interval: timedelta = timedelta(seconds=10)
    instance_ttl: timedelta = DEFAULT_INSTANCE_TTL
    # The agent's hold on its instance; renewing it (once a third has passed) is the
    # heartbeat, so the scheduler's instance TTL must be well above a third of it.
    agent_lease: timedelta = DEFAULT_AGENT_LEASE

    def __post_init__(self) -> None:
        if self.instance_ttl <= self.agent_lease / 3:
            raise ValueError(
                f"the instance TTL ({self.instance_ttl}) must exceed the heartbeat, a third "
                f"of the agent lease ({self.agent_lease / 3})"
            )


# How often an agent without a wake-up channel (its queue could not be opened yet) looks
# at its assignment: it must not wait a whole safety-net poll for every weight change.
FALLBACK_POLL = timedelta(seconds=5)


def never_proven_dead(_identity: str) -> bool:
    return False


class ServiceGoneError(FlotillaError):
    """The agent's service record is not stored (any more)."""


class Agent:
    """Runs until `stop` is set; every iteration is safe to interrupt.

    The agent is its runner's `Liveness`: the runner stops between steps when a stop was
    requested or this agent lost its hold on the instance, and renews that hold from
    inside its waits. So the runner is made here, from `make_runner(liveness)`.
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        store: StateStore,
        make_runner: Callable[[Liveness], DeployRunner],
        clock: Clock,
        stop: threading.Event,
        wait_for_wakeup: Callable[[float], object] | None = None,
        events: EventQueue | None = None,
        on_registered: Callable[[Instance], None] | None = None,
        proven_dead: ProvenDead = never_proven_dead,
        wakeups: WakeUps | None = None,
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
        self._wakeups = wakeups
        self._wake_address: str | None = None
        self._woken = True  # look at the assignment with a consistent read first
        self._hold = InstanceLease(
            store,
            clock,
            instance=Instance(
                settings.instance_id,
                settings.service,
                settings.agent_version,
                registered_at=clock.now(),
                heartbeat_at=clock.now(),
            ),
            instance_ttl=settings.instance_ttl,
            proven_dead=proven_dead,
            wake_address=lambda: self._wake_address,
        )
        self.lease = LeaseKeeper(
            self._hold,
            clock,
            name=lock_name(settings.instance_id),
            owner=settings.owner,
            duration=settings.agent_lease,
        )
        self._finished: set[str] = set()  # deploys done in this process, not to be retried
        # Items refused (engine/deploy/adoption.py), reported once and never acted on.
        self._refused: set[str] = set()
        # A deploy this process started that has not finished: an outage stopped its runner
        # (e.g. between `unlocked` and `done`), so the next iteration resumes it first.
        self._unfinished: tuple[str, str] | None = None  # (deploy id, service)
        self._service_gone = False  # said once that the service record is gone
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

    def _hold_instance(self) -> bool:
        """Keep this agent's hold on its instance (the heartbeat, when due), or take it
        (registering the instance); a standby agent waits for it."""
        if self.lease.held:
            self.lease.keep()
            if self.lease.lost:
                log.warning("lost the instance to another agent: %s", self.lease.lost_reason)
            return self.lease.held
        try:
            if self.lease.acquire():
                self._announce()
        except FlotillaError as failed:
            log.warning("cannot take the instance: %s", failed.message)
        return self.lease.held

    def _announce(self) -> None:
        """Say that this agent (re)joined: to the log, to the scheduler, and the first time
        to whoever started it."""
        instance = self._hold.registered
        if instance is None:
            return
        log.info("registered instance %s in %s", instance.id, instance.service)
        if self.events is not None:
            # Wakes the scheduler at once; its timer would find the instance anyway.
            detail = {"instance_id": instance.id}
            try:
                self.events.send(Event("instance_joined", instance.service, detail))
            except FlotillaError as unsent:
                log.warning("could not announce the instance: %s", unsent.message)
        if self.on_registered is not None:
            announce, self.on_registered = self.on_registered, None
            announce(instance)

    # --- the loop --------------------------------------------------------------------

    def run(self) -> None:
        resumed = False
        while not self.stop.is_set():
            try:
                self._open_wake_up()
                if not self._hold_instance():
                    log.info("another agent runs this instance; standing by")
                    self._wait(self.settings.agent_lease.total_seconds() / 3)
                    continue
                if not resumed:
                    self._resume_unfinished()
                    self._restore_units()
                    resumed = True
                self._deploy_if_assigned()
                self._service_gone = False
            except ServiceGoneError as gone:
                self._idle_without_service(gone)
            except FlotillaError as failed:
                # AWS unreachable or throttling: keep the running units, try again later.
                log.warning("agent iteration failed: %s", failed.message)
            self._wait_for_work()
        try:
            self.lease.release()
        except FlotillaError as failed:
            log.warning("could not release the instance: %s", failed.message)

    # --- a deleted service ----------------------------------------------------------------

    def _service(self, name: str) -> Service:
        try:
            return self.store.get_service(name)
        except NotFoundError as missing:
            raise ServiceGoneError(missing.message) from missing

    def _idle_without_service(self, gone: ServiceGoneError) -> None:
        """The service record is gone (deleted after this instance was unassigned, or by
        an older CLI): say so once, then idle, looking again at every poll. Exiting would
        not help: systemd restarts the agent (`Restart=always`, even after exit 0), and a
        start refuses a missing service, so the agent would crash-loop. Idling keeps what
        runs (only a deploy changes units) and carries on if the service is created again."""
        if not self._service_gone:
            self._service_gone = True
            log.warning(
                "service %s no longer exists (%s): idling, units left as they are, until it "
                "is created again or this agent is stopped",
                self.settings.service,
                gone.message,
            )

    # --- waking up ----------------------------------------------------------------------

    def _open_wake_up(self) -> None:
        """Open this instance's wake-up channel (once; again if it was lost). Until it is
        open the agent polls at `FALLBACK_POLL`; its address rides on every heartbeat."""
        if self._wakeups is None or self._wake_address is not None:
            return
        try:
            self._wake_address = self._wakeups.open(self.settings.instance_id)
        except FlotillaError as failed:
            log.warning("no wake-up channel yet, polling instead: %s", failed.message)

    def _wait_for_work(self) -> None:
        """Until the scheduler rings, the poll interval passes, or the hold is due again."""
        poll = self.settings.poll_interval.total_seconds()
        address = self._wake_address
        if self._wakeups is None or address is None:
            self._woken = False
            self._wait(min(poll, FALLBACK_POLL.total_seconds()))
            return
        seconds = min(poll, max(self.lease.seconds_until_renewal(), 1.0))
        try:
            self._woken = self._wakeups.wait(address, seconds)
        except FlotillaError as failed:
            log.warning("wake-up channel: %s; opening it again", failed.message)
            self._wake_address = None
            self._woken = False

    def _refuse(self, refused: AdoptionRefusedError, what: str) -> None:
        """Report a refused item once; the agent keeps running and leaves the item alone."""
        if what not in self._refused:
            self._refused.add(what)
            adoption.report_refusal(
                refused,
                service=self.settings.service,
                instance=self.settings.instance_id,
                deploy_id=what,
            )

    def _own_instance(self, instance: Instance) -> bool:
        try:
            adoption.check_instance(
                instance, service=self.settings.service, instance_id=self.settings.instance_id
            )
        except AdoptionRefusedError as refused:
            key = f"instance {instance.id} of {instance.service} v{instance.assignment_version}"
            self._refuse(refused, key)
            return False
        return True

    def _instance(self, *, consistent: bool = True) -> Instance | None:
        """This agent's instance item; None (reported once) if the stored item claims
        another service or instance than its key carries (adapters/items)."""
        try:
            return self.store.get_instance(
                self.settings.service, self.settings.instance_id, consistent=consistent
            )
        except MisfiledItemError as misfiled:
            # Named by its key (reported once): the refusal's message says what is wrong.
            key = instance_key(self.settings.service, self.settings.instance_id)
            self._refuse(adoption.misfiled_instance(misfiled), f"instance item {key}")
            return None

    def _resume_unfinished(self) -> None:
        unfinished = [
            checkpoint
            for checkpoint in self.store.list_instance_deploys(
                self.settings.service, self.settings.instance_id
            )
            if not checkpoint.finished
        ]
        if not unfinished:
            return
        instance = self._instance()
        if instance is None:
            return
        for checkpoint in unfinished:
            if not self.stop.is_set():
                try:
                    adoption.check_resumable(checkpoint, instance, service=self.settings.service)
                except AdoptionRefusedError as refused:
                    self._refuse(refused, checkpoint.id)
                    continue
                log.info("resuming deploy %s in state %s", checkpoint.id, checkpoint.state)
                service = self._service(checkpoint.service)
                self.runner.run(checkpoint.id, service, known=checkpoint)

    def _restore_units(self) -> None:
        instance = self._instance()
        if instance is None:
            return
        if instance.current_revision is not None and self._own_instance(instance):
            self.runner.restore_units(instance, self._service(instance.service))

    def _deploy_if_assigned(self) -> None:
        if self._unfinished is not None:
            deploy_id, service_name = self._unfinished
            log.info("resuming deploy %s, stopped by a failed iteration", deploy_id)
            self._run(deploy_id, self._service(service_name))
            if self._unfinished is not None:
                return  # still not done (stopping, or another runner is ahead): next time
        # A wake-up means the scheduler has just written: read the latest. A periodic look
        # may read a moment-old item, for half the price.
        instance = self._instance(consistent=self._woken)
        if instance is None:
            return
        # Assigned none while running a revision is a deploy too: an unassignment, which
        # leaves the load balancer and stops and removes every unit (machines/deploy.py).
        if instance.assigned_revision == instance.current_revision:
            return
        deploy_id = deploy_id_for(instance)
        if deploy_id in self._finished or deploy_id in self._refused:
            return  # tried and rolled back, or refused: wait for a new assignment
        if not self._own_instance(instance):
            return
        service = self._service(instance.service)
        try:
            checkpoint = self.runner.create(instance, service)
        except AdoptionRefusedError as refused:
            self._refuse(refused, deploy_id)
            return
        if checkpoint.finished:
            self._finished.add(checkpoint.id)
        else:
            self._run(checkpoint.id, service, known=checkpoint)

    def _run(self, deploy_id: str, service: Service, known: DeployCheckpoint | None = None) -> None:
        self._unfinished = (deploy_id, service.name)
        checkpoint = self.runner.run(deploy_id, service, known=known)
        if checkpoint.finished:
            self._finished.add(checkpoint.id)
            self._unfinished = None
