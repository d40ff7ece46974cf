"""A small service for in-process fault tests: memory store, locks and load balancer, one
in-memory unit runtime per instance (adapters/memory_runtime.py), a fake clock, and the
checks every fault test ends with (`check_converged`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from flotilla.adapters.memory_load_balancer import MemoryLoadBalancer
from flotilla.adapters.memory_locks import MemoryLockService
from flotilla.adapters.memory_runtime import MemoryMachine, MemoryUnitRuntime, exits_at_once
from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.adapters.secrets import LocalSecretBox
from flotilla.cli.agent_assembly import AgentAdapters, build_runner
from flotilla.engine import units
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.clock import FakeClock
from flotilla.engine.deploy.runner import DeployRunner, FaultHook, RunnerSettings
from flotilla.engine.liveness import expiry_for
from flotilla.engine.records import (
    Hook,
    Instance,
    LoadBalancerKind,
    LoadBalancerRef,
    Revision,
    RolloutPolicy,
    Service,
)
from flotilla.engine.revisions import build_revision

GOOD = "[Service]\nType=exec\nExecStart=/usr/bin/api\n"


def hook_exit_status(_unit: str, script: str) -> int | None:
    """What a hook does on the memory machine: a script's last `exit N` (else 0)."""
    found = re.findall(r"exit (\d+)", script)
    return int(found[-1]) if found else 0


@dataclass
class FaultWorld:
    max_in_flight: str = "1"
    clock: FakeClock = field(default_factory=FakeClock)

    def __post_init__(self) -> None:
        self.locks = MemoryLockService(self.clock)
        self.store = MemoryStateStore(self.clock, self.locks)
        self.secrets = LocalSecretBox(os.urandom(32))
        self.lb = MemoryLoadBalancer(self.clock, drain_seconds=30, health_seconds=20)
        self.runtimes: dict[str, MemoryUnitRuntime] = {}
        self.service = self.store.create_service(
            Service(
                "api",
                load_balancer=LoadBalancerRef(LoadBalancerKind.CLASSIC, "api-elb"),
                drain_timeout_seconds=120,
                health_timeout_seconds=120,
                settle_seconds=3,
                rollout=RolloutPolicy(self.max_in_flight),
            )
        )

    def revision(
        self, label: str, *, broken: bool = False, hooks: dict[str, Hook] | None = None
    ) -> Revision:
        unit_files = {"api.service": GOOD}
        if broken:
            unit_files["broken.service"] = GOOD  # its runtime makes it exit at once
        revision = build_revision(
            "api",
            label,
            unit_files,
            {"api.service": {"TOKEN": f"t-{label}"}},
            self.secrets,
            self.clock.now(),
            hooks,
        )
        return self.store.put_revision(revision)

    def instance(self, instance_id: str) -> Instance:
        now = self.clock.now()
        machine = MemoryMachine(
            exits=exits_at_once({"broken.service"}), hook_exits=hook_exit_status
        )
        self.runtimes[instance_id] = MemoryUnitRuntime(machine)
        stored = self.store.register_instance(
            Instance(instance_id, "api", "test", now, now), expires_at=expiry_for(now)
        )
        self.lb.register(instance_id)
        return stored

    def adapters(self, instance_id: str) -> AgentAdapters:
        """What the instance's agent and runner use (agents: `cli.agent_assembly`)."""
        return AgentAdapters(
            store=self.store,
            locks=self.locks,
            runtime=self.runtimes[instance_id],
            secrets=self.secrets,
            clock=self.clock,
            load_balancer_for=lambda _service: self.lb,
        )

    def runner(self, instance_id: str, fault: FaultHook | None = None) -> DeployRunner:
        return build_runner(self.adapters(instance_id), settings=RunnerSettings(), fault=fault)

    def assign(self, instance_id: str, revision: Revision) -> Instance:
        current = self.store.get_instance("api", instance_id)
        return self.store.set_assignment(
            "api", instance_id, revision.id, expected_version=current.assignment_version
        )

    def heartbeat(self) -> None:
        now = self.clock.now()
        for instance_id in self.runtimes:
            self.store.record_heartbeat("api", instance_id, now, expiry_for(now))

    def check_converged(self, deploy: DeployCheckpoint) -> None:
        """What every fault test demands of a deploy once the faults stopped."""
        assert deploy.finished, f"{deploy.id} stuck in {deploy.state}"
        assert deploy.outcome in (Outcome.SUCCEEDED, Outcome.ROLLED_BACK), (
            deploy.outcome,
            deploy.error,
            deploy.rollback_error,
        )
        if deploy.outcome is Outcome.ROLLED_BACK:
            assert deploy.error, "rolled back without a reason"
        instance = self.store.get_instance("api", deploy.instance_id)
        expected = (
            deploy.to_revision if deploy.outcome is Outcome.SUCCEEDED else deploy.from_revision
        )
        assert instance.current_revision == expected
        active = self.runtimes[deploy.instance_id].active()
        wanted = [units.installed_name("api.service", expected)] if expected else []
        assert active == wanted, active
        assert deploy.instance_id in self.lb.registered(), "the instance stayed deregistered"
        held = [h for h in self.locks.holders("deploy/api") if h.owner == deploy.id]
        assert not held, f"the finished deploy {deploy.id} still holds {held}"
