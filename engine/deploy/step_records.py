"""What a deploy step reports, and what steps are given: records shared by the steps
(engine/deploy/steps.py) and the runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from flotilla.engine.checkpoint import LeaseRef, UnitPlan
from flotilla.engine.clock import Clock
from flotilla.engine.ports import (
    ContainerImages,
    HealthProbe,
    LoadBalancer,
    LockService,
    SecretBox,
    StateStore,
    UnitRuntime,
)
from flotilla.engine.records import CurrentRevision, Lease
from flotilla.machines.deploy import StepResult

__all__ = ["SKIPPED", "Advance", "Ports", "StepSettings"]


@dataclass(frozen=True)
class Advance:
    """What a step reports: it succeeded, was skipped (a load-balancer state of a service
    without one) or failed; the machine maps that to its trigger. The rest is recorded
    in the checkpoint."""

    result: StepResult = StepResult.SUCCEEDED
    lease: LeaseRef | None = None
    # The instance's current revision, written atomically with the checkpoint.
    current: CurrentRevision | None = None
    # The slot to free with the checkpoint, in the same write.
    release: Lease | None = None
    clear_lease: bool = False
    deadlines: dict[str, datetime] = field(default_factory=dict)
    units: UnitPlan | None = None  # decided in `locking`, kept for the rest of the deploy
    images: dict[str, str] | None = None  # pinned in `locking` (engine/container_images.py)

    @property
    def skipped(self) -> bool:
        return self.result is StepResult.SKIPPED


SKIPPED: Final = Advance(result=StepResult.SKIPPED)


@dataclass(frozen=True)
class StepSettings:
    lease: timedelta = timedelta(seconds=120)
    # The longest sleep between two polls of a wait: short enough that the leases renewed
    # from inside waits (this deploy's slot, the agent's own lock) never lapse in between.
    max_poll_seconds: float = 5.0
    rollback_health_timeout: timedelta = timedelta(minutes=5)
    overall_timeout: timedelta = timedelta(minutes=30)


@dataclass
class Ports:
    store: StateStore
    locks: LockService
    runtime: UnitRuntime
    secrets: SecretBox
    load_balancer: LoadBalancer | None
    clock: Clock
    # The agent-side probe for a service without a load balancer that has a health check
    # (engine/deploy/probing.py); None: no probing here (a deploy of such a service fails).
    probe: HealthProbe | None = None
    # Pulls container units' images; None on an agent that runs no containers (their
    # units then run the image as the revision names it, unpinned).
    images: ContainerImages | None = None
