"""The one place an agent is assembled: `build_agent()`, and `build_runner()` for a runner
on its own.

The agent command, the demo (through that command), the benchmarks and the tests all get
their agents here, so a change to how the runner and the agent are put together (their
constructors, the liveness the agent gives its runner, the ports per service) is made
once. What differs between them comes in as arguments: the adapters (`AgentAdapters`:
real ones from the composition root, `adapters_from(wiring, …)`, or memory ones in tests),
the clock among them, the stop event, the fault hook, and the settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from flotilla.adapters import process_identity
from flotilla.adapters.docker_images import DockerImages
from flotilla.adapters.health_probe import LocalHealthProbe
from flotilla.cli.wiring import Wiring
from flotilla.engine.clock import Clock
from flotilla.engine.deploy.agent import Agent, AgentSettings, never_proven_dead
from flotilla.engine.deploy.agent_lease import ProvenDead
from flotilla.engine.deploy.runner import DeployRunner, FaultHook, Liveness, RunnerSettings
from flotilla.engine.deploy.steps import Ports
from flotilla.engine.ports import (
    ContainerImages,
    EventQueue,
    HealthProbe,
    LoadBalancer,
    LockService,
    SecretBox,
    StateStore,
    UnitRuntime,
    WakeUps,
)
from flotilla.engine.records import Instance, Service


def no_load_balancer(_service: Service) -> LoadBalancer | None:
    return None


@dataclass(frozen=True)
class AgentAdapters:
    """What one instance's agent and its runner reach the world through."""

    store: StateStore
    locks: LockService
    runtime: UnitRuntime
    secrets: SecretBox
    clock: Clock
    load_balancer_for: Callable[[Service], LoadBalancer | None] = no_load_balancer
    events: EventQueue | None = None  # wakes the scheduler: instance joined, deploy ended
    # Whether the agent process an identity names is gone, so a successor need not wait
    # out its hold (adapters/process_identity.py on a real machine; never, in a world of
    # simulated instances that share one machine's processes).
    proven_dead: ProvenDead = never_proven_dead
    # The instance's wake-up channel: the scheduler rings it when the assignment changes.
    wakeups: WakeUps | None = None
    # Probes a service's own health check when it has no load balancer: on this machine,
    # as the real agent does, in every world (a probe of a service that has none is never
    # made).
    probe: HealthProbe = field(default_factory=LocalHealthProbe)
    # Pulls the images of container units (docs/containers.md); None: they run unpinned.
    images: ContainerImages | None = None

    def ports(self, service: Service) -> Ports:
        """The runner's ports for a deploy of `service` (its load balancer, if any)."""
        return Ports(
            self.store,
            self.locks,
            self.runtime,
            self.secrets,
            self.load_balancer_for(service),
            self.clock,
            self.probe,
            self.images,
        )


def adapters_from(
    wiring: Wiring,
    runtime: UnitRuntime,
    *,
    kms_key_id: str | None,
    stop: threading.Event | None = None,
) -> AgentAdapters:
    """The real adapters of an agent: AWS through `wiring`, units on `runtime`.

    The events queue is looked up now, so an agent that cannot find it stops at start;
    a service's load balancer is built at its first deploy and kept for the next ones.
    """
    balancers: dict[str, LoadBalancer | None] = {}

    def load_balancer_for(service: Service) -> LoadBalancer | None:
        if service.name not in balancers:
            balancers[service.name] = wiring.load_balancer(service.load_balancer)
        return balancers[service.name]

    return AgentAdapters(
        store=wiring.store,
        locks=wiring.locks,
        runtime=runtime,
        secrets=wiring.secret_box(kms_key_id),
        clock=wiring.clock,
        load_balancer_for=load_balancer_for,
        events=wiring.events,
        proven_dead=process_identity.proven_dead,
        wakeups=wiring.wakeups(stop),
        images=DockerImages(),  # the docker CLI is looked for only when a unit needs it
    )


def build_runner(
    adapters: AgentAdapters,
    *,
    settings: RunnerSettings | None = None,
    fault: FaultHook | None = None,
    liveness: Liveness | None = None,
    report_deploys: bool = True,
) -> DeployRunner:
    """A deploy runner on `adapters`. Alone (tests, tools) it never stops between steps;
    an agent's runner gets the agent as its `liveness` (see `build_agent`)."""
    return DeployRunner(
        adapters.ports,
        settings=settings,
        events=adapters.events if report_deploys else None,
        liveness=liveness,
        **({} if fault is None else {"fault": fault}),
    )


def build_agent(
    settings: AgentSettings,
    adapters: AgentAdapters,
    *,
    stop: threading.Event,
    runner_settings: RunnerSettings | None = None,
    fault: FaultHook | None = None,
    wait_for_wakeup: Callable[[float], object] | None = None,
    on_registered: Callable[[Instance], None] | None = None,
    report_deploys: bool = True,
) -> Agent:
    """The agent of one instance, with its runner, ready to `run()` until `stop` is set.

    `fault` is the crash tests' hook into the runner; `wait_for_wakeup` replaces the
    wait between polls (the agent command wakes on SIGTERM, tests move a fake clock);
    `on_registered` is called once the instance is registered (the command tells
    systemd); `report_deploys` False keeps the runner from sending deploy ends on
    `adapters.events` (the simulation measures without them).
    """

    def make_runner(liveness: Liveness) -> DeployRunner:
        return build_runner(
            adapters,
            settings=runner_settings,
            fault=fault,
            liveness=liveness,
            report_deploys=report_deploys,
        )

    return Agent(
        settings,
        store=adapters.store,
        make_runner=make_runner,
        clock=adapters.clock,
        stop=stop,
        wait_for_wakeup=wait_for_wakeup,
        events=adapters.events,
        on_registered=on_registered,
        proven_dead=adapters.proven_dead,
        wakeups=adapters.wakeups,
    )
