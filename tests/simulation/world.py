"""A simulated fleet: the real scheduler and real agents (with their real deploy runners)
on the in-memory store, locks, load balancer and event queue, on one simulated clock.

Everything that runs is production code: `Scheduler` (leadership, timer, events,
`SchedulerPass`), one `Agent` per instance with its `DeployRunner` and `Steps`. Only the
machines are simulated: a `MemoryUnitRuntime` per instance (adapters/memory_runtime.py),
and the load balancer is the `MemoryLoadBalancer`, which drains and health-checks in
simulated time. Every call to the store and to the lock service goes through a counting
wrapper, split by caller (agents, scheduler), so idle rates and rollout costs are measured,
not estimated. The load balancer is watched at every call that can change who is in
service, which are the only moments the number out of service can change.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flotilla.adapters import items
from flotilla.adapters.memory_events import MemoryEventQueue
from flotilla.adapters.memory_load_balancer import MemoryLoadBalancer
from flotilla.adapters.memory_locks import MemoryLockService
from flotilla.adapters.memory_runtime import MemoryUnitRuntime
from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.adapters.memory_wakeups import MemoryWakeUps
from flotilla.adapters.secrets import LocalSecretBox
from flotilla.cli.agent_assembly import AgentAdapters, build_agent
from flotilla.engine.deploy.agent import Agent, AgentSettings
from flotilla.engine.liveness import DEFAULT_AGENT_LEASE, expiry_for
from flotilla.engine.ports import Event, TargetState
from flotilla.engine.records import (
    Instance,
    LoadBalancerKind,
    LoadBalancerRef,
    Revision,
    RolloutPolicy,
    RolloutStatus,
    Service,
)
from flotilla.engine.revisions import build_revision
from flotilla.engine.updates import modify_service
from flotilla.scheduler.service import Scheduler, SchedulerSettings
from tests.simulation.simclock import SimClock
from tests.unit.test_items import ec2_notification

SERVICE = "api"
UNIT = "[Service]\nType=exec\nExecStart=/usr/bin/api --port 8080\n"


class Counting:
    """Counts the calls made through it, by method name; forwards everything."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method):
            return method

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


class WatchedLoadBalancer:
    """The memory load balancer, with the largest number of instances out of service seen."""

    def __init__(self, inner: MemoryLoadBalancer, fleet: int) -> None:
        self.inner = inner
        self.fleet = fleet
        self.out_of_service = 0
        self.max_out_of_service = 0
        self._registered: set[str] = set()

    def track(self, instance_id: str) -> None:
        self._registered.add(instance_id)

    def deregister(self, instance_id: str) -> None:
        self.inner.deregister(instance_id)
        self._observe(instance_id)

    def register(self, instance_id: str) -> None:
        self.inner.register(instance_id)
        self._observe(instance_id)

    def state(self, instance_id: str) -> TargetState:
        return self.inner.state(instance_id)

    def _observe(self, instance_id: str) -> None:
        # Only this instance can have changed; the memory balancer is the truth.
        if instance_id in self.inner.registered():
            self._registered.add(instance_id)
        else:
            self._registered.discard(instance_id)
        self.out_of_service = self.fleet - len(self._registered)
        self.max_out_of_service = max(self.max_out_of_service, self.out_of_service)


@dataclass(frozen=True)
class SimSettings:
    instances: int = 1000
    max_in_flight: str = "50"
    drain_seconds: float = 30  # the load balancer's connection draining
    health_seconds: float = 20  # until its health checks pass
    settle_seconds: int = 3
    agent_poll: timedelta = timedelta(seconds=60)  # the CLI's default: a safety net
    agent_lease: timedelta = DEFAULT_AGENT_LEASE  # renewed at a third: the heartbeat
    scheduler_interval: timedelta = timedelta(seconds=15)
    idle_minutes: int = 5  # measured before the rollout
    warmup_minutes: int = 2
    limit: timedelta = timedelta(hours=12)  # of simulated time, for the rollout
    agent_events: bool = True  # agents report deploy ends on the queue, as in production
    wake_ups: bool = True  # the scheduler rings agents whose assignment changed


@dataclass
class SimResult:
    settings: SimSettings
    slots: int
    rollout_seconds: float  # weight change -> the scheduler records the rollout complete
    last_deploy_seconds: float  # weight change -> the last deploy done
    one_deploy_seconds: float  # median duration of one deploy (created -> done)
    deploys: int
    outcomes: dict[str, int]
    max_out_of_service: int
    rollout_store_calls: dict[str, int]
    rollout_lock_calls: dict[str, int]
    idle_agent_calls_per_minute: dict[str, float]  # per agent
    idle_scheduler_calls_per_minute: dict[str, float]
    idle_scheduler_lock_calls_per_minute: dict[str, float]
    item_bytes: dict[str, int]
    wall_seconds: float
    switches: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ideal_seconds(self) -> float:
        return math.ceil(self.settings.instances / self.slots) * self.one_deploy_seconds


class Fleet:
    """The simulated environment; `run_rollout` is the whole experiment."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.clock = SimClock()
        self.locks = MemoryLockService(self.clock)
        self.store = MemoryStateStore(self.clock, self.locks)
        self.events = MemoryEventQueue(self.clock)
        self.wakeups = MemoryWakeUps(self.clock) if settings.wake_ups else None
        self.secrets = LocalSecretBox(os.urandom(32))
        self.lb = WatchedLoadBalancer(
            MemoryLoadBalancer(
                self.clock,
                drain_seconds=settings.drain_seconds,
                health_seconds=settings.health_seconds,
            ),
            settings.instances,
        )
        self.agent_store = Counting(self.store)
        self.agent_locks = Counting(self.locks)
        self.scheduler_store = Counting(self.store)
        self.scheduler_locks = Counting(self.locks)
        self.runtimes: dict[str, MemoryUnitRuntime] = {}
        self.stop = threading.Event()
        self.ids = [f"i-{n:05d}" for n in range(settings.instances)]
        self.service = self.store.create_service(
            Service(
                SERVICE,
                load_balancer=LoadBalancerRef(LoadBalancerKind.CLASSIC, "api-elb"),
                drain_timeout_seconds=300,
                health_timeout_seconds=300,
                settle_seconds=settings.settle_seconds,
                rollout=RolloutPolicy(settings.max_in_flight, max_failures=1),
            )
        )

    def revision(self, label: str) -> Revision:
        revision = build_revision(
            SERVICE,
            label,
            {"api.service": UNIT},
            {"api.service": {"DATABASE_PASSWORD": f"secret-{label}"}},
            self.secrets,
            self.clock.now(),
        )
        return self.store.put_revision(revision)

    def install_fleet(self, running: Revision) -> None:
        """Every instance registered, running `running` and in service: a settled fleet."""
        now = self.clock.now()
        for instance_id in self.ids:
            self.store.register_instance(
                Instance(instance_id, SERVICE, "sim", now, now), expires_at=expiry_for(now)
            )
            self.store.set_assignment("api", instance_id, running.id, expected_version=0)
            self.store.set_current_revision("api", instance_id, running.id)
            runtime = MemoryUnitRuntime()
            runtime.start(runtime.install(running.id, running.units, {"api.service": {}}))
            self.runtimes[instance_id] = runtime
            self.lb.inner.register(instance_id)
            self.lb.track(instance_id)
        self.clock.sleep(0)
        self.clock.sleep(self.settings.health_seconds)  # all healthy before agents start
        modify_service(
            self.store, SERVICE, lambda s: dataclasses.replace(s, weights={running.id: 100})
        )

    def start(self, *, scheduler: bool = True) -> None:
        if scheduler:
            self.clock.spawn("scheduler", self.scheduler("scheduler-1").run)
        for instance_id in self.ids:
            self.clock.spawn(instance_id, self._agent(instance_id).run)

    def scheduler(self, owner: str, store: Any = None, locks: Any = None) -> Scheduler:
        return Scheduler(
            SchedulerSettings(owner=owner, interval=self.settings.scheduler_interval),
            store=store or self.scheduler_store,
            locks=locks or self.scheduler_locks,
            events=self.events,
            clock=self.clock,
            stop=self.stop,
            wakeups=self.wakeups,
        )

    def _agent(self, instance_id: str) -> Agent:
        adapters = AgentAdapters(
            store=self.agent_store,  # counting wrappers, as the scheduler's
            locks=self.agent_locks,
            runtime=self.runtimes[instance_id],
            secrets=self.secrets,
            clock=self.clock,
            load_balancer_for=lambda _service: self.lb,
            events=self.events,
            wakeups=self.wakeups,
        )
        return build_agent(
            AgentSettings(
                instance_id,
                SERVICE,
                "sim",
                owner=f"{instance_id}.1",
                poll_interval=self.settings.agent_poll,
                agent_lease=self.settings.agent_lease,
            ),
            adapters,
            stop=self.stop,
            report_deploys=self.settings.agent_events,
        )

    def reset_counts(self) -> None:
        for counter in (self.agent_store, self.agent_locks, self.scheduler_store):
            counter.calls.clear()
        self.scheduler_locks.calls.clear()

    def shut_down(self) -> None:
        self.stop.set()
        while self.clock.alive():
            self.clock.sleep(1)

    def item_bytes(self) -> dict[str, int]:
        """DynamoDB sizes of the items the idle calls touch (for the bill)."""
        sample = self.ids[0]
        service = items.service_to_item(self.store.get_service(SERVICE))
        instance = self.store.get_instance("api", sample)
        instance_item = items.instance_to_item(
            instance, expires_at=expiry_for(instance.heartbeat_at)
        )
        deploys = self.store.list_instance_deploys("api", sample)
        deploy = items.deploy_to_item(deploys[-1]) if deploys else {}
        return {
            "service": items.item_size(service),
            "instance": items.item_size(instance_item),
            "deploy": items.item_size(deploy),
        }


def _leaving(fleet: Fleet) -> float:
    """EC2 says one instance is terminating (as EventBridge delivers it to the events
    queue): simulated seconds until the scheduler has taken its assignment away."""
    gone = fleet.ids[-1]
    said_at = fleet.clock.now()
    fleet.events.deliver(ec2_notification("shutting-down", gone))
    while fleet.store.get_instance("api", gone).assigned_revision is not None:
        fleet.clock.check()
        if fleet.clock.now() - said_at > timedelta(minutes=10):
            raise AssertionError(f"{gone} was still assigned 10 minutes after EC2 said it went")
        fleet.clock.sleep(1)
    return (fleet.clock.now() - said_at).total_seconds()


def _per_minute(calls: Counter[str], minutes: float, per: int = 1) -> dict[str, float]:
    return {name: n / minutes / per for name, n in sorted(calls.items())}


def run_rollout(settings: SimSettings, observe: Callable[[Fleet], None] | None = None) -> SimResult:
    """Settle a fleet on v1, measure it idle, roll out v2 to every instance, check the end."""
    started = time.monotonic()
    fleet = Fleet(settings)
    v1, v2 = fleet.revision("v1"), fleet.revision("v2")
    fleet.install_fleet(v1)
    fleet.start()
    try:
        fleet.clock.sleep(settings.warmup_minutes * 60)
        fleet.clock.check()
        fleet.reset_counts()
        fleet.clock.sleep(settings.idle_minutes * 60)
        idle_agents = _per_minute(
            fleet.agent_store.calls + fleet.agent_locks.calls,
            settings.idle_minutes,
            settings.instances,
        )
        idle_scheduler = _per_minute(fleet.scheduler_store.calls, settings.idle_minutes)
        idle_scheduler_locks = _per_minute(fleet.scheduler_locks.calls, settings.idle_minutes)
        fleet.reset_counts()

        changed_at = fleet.clock.now()
        modify_service(fleet.store, SERVICE, lambda s: dataclasses.replace(s, weights={v2.id: 100}))
        fleet.events.send(Event("service_changed", SERVICE))  # as `flotilla weights` does
        deadline = changed_at + settings.limit
        while not _complete(fleet, v2.id):
            fleet.clock.check()
            if observe is not None:
                observe(fleet)
            if fleet.clock.now() > deadline:
                raise AssertionError(f"the rollout did not complete in {settings.limit}")
            fleet.clock.sleep(5)
        rollout_store = dict(fleet.agent_store.calls + fleet.scheduler_store.calls)
        rollout_locks = dict(fleet.agent_locks.calls + fleet.scheduler_locks.calls)
        service = fleet.store.get_service(SERVICE)
        completed = next(e.at for e in reversed(service.history) if e.kind == "rollout_complete")
        deploys = [d for d in fleet.store.list_deploys(SERVICE) if d.to_revision == v2.id]
        durations = sorted((d.history[-1].ended_at or d.updated_at) - d.created_at for d in deploys)
        result = SimResult(
            settings=settings,
            slots=service.rollout.slots(settings.instances),
            rollout_seconds=(completed - changed_at).total_seconds(),
            last_deploy_seconds=(max(d.updated_at for d in deploys) - changed_at).total_seconds(),
            one_deploy_seconds=durations[len(durations) // 2].total_seconds(),
            deploys=len(deploys),
            outcomes=dict(Counter(str(d.outcome) for d in deploys)),
            max_out_of_service=fleet.lb.max_out_of_service,
            rollout_store_calls=rollout_store,
            rollout_lock_calls=rollout_locks,
            idle_agent_calls_per_minute=idle_agents,
            idle_scheduler_calls_per_minute=idle_scheduler,
            idle_scheduler_lock_calls_per_minute=idle_scheduler_locks,
            item_bytes=fleet.item_bytes(),
            wall_seconds=0.0,
            switches=fleet.clock.switches,
        )
        result.extra["deploy_lock_holders_at_end"] = len(fleet.locks.holders(f"deploy/{SERVICE}"))
        result.extra["registered_at_end"] = len(fleet.lb.inner.registered())
        result.extra["active_v2_units"] = sum(
            1 for r in fleet.runtimes.values() if r.active() and v2.id[:12] in r.active()[0]
        )
        result.extra["only_one_unit_each"] = all(
            len(r.active()) == 1 for r in fleet.runtimes.values()
        )
        result.extra["wake_ups"] = 0 if fleet.wakeups is None else fleet.wakeups.rings
        result.extra["left_after_seconds"] = _leaving(fleet)
    finally:
        fleet.shut_down()
    fleet.clock.check()
    result.wall_seconds = time.monotonic() - started
    return result


def _complete(fleet: Fleet, revision: str) -> bool:
    service = fleet.store.get_service(SERVICE)
    state = service.rollout_state
    if state.status is not RolloutStatus.COMPLETE or state.weights != {revision: 100}:
        return False
    return all(i.current_revision == revision for i in fleet.store.list_instances(SERVICE))
