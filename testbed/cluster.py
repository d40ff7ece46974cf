"""A small cluster for engine tests and the deploy benchmark: memory store and locks, a
local secret box, a load balancer that takes time, and real processes as units
(ProcessRuntime), on a fake clock. Its runners and agents are assembled where every
agent is (`flotilla.cli.agent_assembly`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from flotilla.adapters.memory_load_balancer import MemoryLoadBalancer
from flotilla.adapters.memory_locks import MemoryLockService
from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.adapters.process_runtime import ProcessRuntime
from flotilla.adapters.secrets import LocalSecretBox
from flotilla.cli.agent_assembly import AgentAdapters, build_runner
from flotilla.engine.clock import FakeClock, SystemClock
from flotilla.engine.deploy.runner import DeployRunner, FaultHook, RunnerSettings
from flotilla.engine.liveness import expiry_for
from flotilla.engine.ports import ContainerImages
from flotilla.engine.records import (
    Hook,
    Instance,
    LoadBalancerKind,
    LoadBalancerRef,
    Revision,
    Service,
)
from flotilla.engine.revisions import build_revision

SLEEPER = "[Service]\nExecStart=/bin/sleep 600\n"
BROKEN = "[Service]\nExecStart=/bin/sh -c 'exit 3'\n"


@dataclass
class Cluster:
    root: Path
    clock: FakeClock = field(default_factory=FakeClock)
    with_load_balancer: bool = True
    images: ContainerImages | None = None  # container units run unpinned without it

    def __post_init__(self) -> None:
        self.locks = MemoryLockService(self.clock)
        self.store = MemoryStateStore(self.clock, self.locks)
        self.secrets = LocalSecretBox(os.urandom(32))
        self.lb = MemoryLoadBalancer(self.clock, drain_seconds=30, health_seconds=20)
        self.runtimes: dict[str, ProcessRuntime] = {}
        balancer = LoadBalancerRef(LoadBalancerKind.CLASSIC, "api-elb")
        self.service = self.store.create_service(
            Service(
                "api",
                load_balancer=balancer if self.with_load_balancer else None,
                drain_timeout_seconds=120,
                health_timeout_seconds=120,
                settle_seconds=3,
            )
        )

    def runtime(self, instance_id: str) -> ProcessRuntime:
        if instance_id not in self.runtimes:
            # Real time for the processes themselves; the engine runs on the fake clock.
            self.runtimes[instance_id] = ProcessRuntime(self.root / instance_id, SystemClock())
        return self.runtimes[instance_id]

    def adapters(self, instance_id: str) -> AgentAdapters:
        """What the instance's agent and runner use, built at each call: a test (or the
        benchmark) that swapped the store or a runtime gets its own."""
        return AgentAdapters(
            store=self.store,
            locks=self.locks,
            runtime=self.runtime(instance_id),
            secrets=self.secrets,
            clock=self.clock,
            load_balancer_for=lambda _service: self.lb if self.with_load_balancer else None,
            images=self.images,
        )

    def runner(self, instance_id: str, fault: FaultHook | None = None) -> DeployRunner:
        return build_runner(self.adapters(instance_id), settings=RunnerSettings(), fault=fault)

    def revision(
        self,
        label: str,
        unit: str = SLEEPER,
        env: dict[str, str] | None = None,
        hooks: dict[str, Hook] | None = None,
    ) -> Revision:
        revision = build_revision(
            "api",
            label,
            {"app.service": unit},
            {"app.service": env} if env else {},
            self.secrets,
            self.clock.now(),
            hooks,
        )
        return self.store.put_revision(revision)

    def instance(self, instance_id: str) -> Instance:
        now = self.clock.now()
        instance = Instance(instance_id, "api", "test", now, now)
        stored = self.store.register_instance(instance, expires_at=expiry_for(now))
        if self.with_load_balancer:
            self.lb.register(instance_id)
        return stored

    def assign(self, instance_id: str, revision: Revision) -> Instance:
        current = self.store.get_instance(self.service.name, instance_id)
        return self.store.set_assignment(
            self.service.name, instance_id, revision.id, expected_version=current.assignment_version
        )

    def deploy(self, instance_id: str, fault: FaultHook | None = None) -> str:
        """Create the deploy for the current assignment and run it; returns its id."""
        instance = self.store.get_instance(self.service.name, instance_id)
        runner = self.runner(instance_id, fault)
        checkpoint = runner.create(instance, self.service)
        runner.run(checkpoint.id, self.service, known=checkpoint)
        return checkpoint.id

    def shutdown(self) -> None:
        for runtime in self.runtimes.values():
            owned = runtime.owned_units()
            runtime.stop(owned)
