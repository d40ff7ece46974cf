"""The deploy checkpoint: everything needed to resume a deploy after a crash.

A checkpoint is written conditionally on `version` after every step, so two agent
processes on one instance can never both advance the same deploy. Deadlines and
attempt counts live here, not in memory, so a resumed deploy gets no fresh budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from flotilla.machines.deploy import Outcome

__all__ = [
    "DeployCheckpoint",
    "HookOutcome",
    "LeaseRef",
    "Outcome",
    "Transition",
    "UnitPlan",
]  # Outcome: the machine's


@dataclass(frozen=True)
class HookOutcome:
    """How one run of a lifecycle hook ended (engine/deploy/hooks.py), kept in the history
    of the state that ran it. Never its output: that stays in the instance's journal."""

    hook: str  # before-stop, after-start, validate
    revision: str  # the revision whose hook it is
    timeout_seconds: int  # what it was allowed
    result: str  # systemd's words: success, exit-code, timeout, signal, ...
    exit_status: int | None  # None when it did not exit by itself
    duration_seconds: float

    @property
    def succeeded(self) -> bool:
        return self.result == "success" and self.exit_status == 0


@dataclass(frozen=True)
class Transition:
    """One visit of a state, as the trace viewer shows it."""

    state: str
    started_at: datetime
    ended_at: datetime | None = None
    attempt: int = 1
    error: str | None = None
    skipped: bool = False  # e.g. load-balancer states of a service without one
    skip_reason: str | None = None  # why, in words (the machine's `skip_reason`)
    resumed: bool = False  # this visit began in a restarted agent
    span_id: str | None = None
    hooks: tuple[HookOutcome, ...] = ()  # the lifecycle hooks this visit ran, in order


@dataclass(frozen=True)
class LeaseRef:
    """The lock slot a deploy holds, as recorded in its checkpoint."""

    name: str
    slot: int
    owner: str
    token: int


@dataclass(frozen=True)
class UnitPlan:
    """Which units a deploy replaces and which it leaves running, decided once (in
    `locking`, engine/unit_plan.py) and kept so a resumed deploy and its rollback act on
    the same sets. Names only: nothing here is secret.

    `before` and `after` map each unit of the revision (`web.service`) to the installed
    name it runs under before and after the deploy. A unit that did not change keeps its
    installed name, so both map it to the same name and it is never stopped.
    """

    before: Mapping[str, str]
    after: Mapping[str, str]
    changed: tuple[str, ...]  # units of the target replaced or added (revision names)
    removed: tuple[str, ...]  # units of the previous revision the target no longer has
    traffic_kept: bool  # no unit that serves traffic changes: the instance stays in the LB

    @property
    def stop(self) -> list[str]:
        """Installed names running before that the target does not keep."""
        keep = set(self.after.values())
        return sorted(name for name in self.before.values() if name not in keep)

    @property
    def start(self) -> list[str]:
        """Installed names of the target that were not running before."""
        kept = set(self.before.values())
        return sorted(name for name in self.after.values() if name not in kept)


@dataclass(frozen=True)
class DeployCheckpoint:
    """One instance moving from its current revision to its assigned one (None: an
    unassignment, which stops and removes every unit Flotilla owns there)."""

    id: str
    service: str
    instance_id: str
    from_revision: str | None
    to_revision: str | None
    state: str
    machine_version: int  # the state machine definition that wrote this checkpoint
    created_at: datetime
    updated_at: datetime
    version: int = 0
    deadlines: dict[str, datetime] = field(default_factory=dict)  # "overall", "drain", ...
    attempts: dict[str, int] = field(default_factory=dict)  # state -> attempts so far
    lease: LeaseRef | None = None
    trace_parent: str | None = None  # W3C traceparent of the deploy's root span
    last_span_id: str | None = None  # linked from the resume span after a crash
    outcome: Outcome | None = None
    failed_in: str | None = None  # the state whose step failed, noted by the machine
    error: str | None = None  # why the new revision failed, if it did
    rollback_error: str | None = None  # why restoring the previous revision failed, if it did
    history: tuple[Transition, ...] = ()
    # Written by machine version 2 and later: which units change (None: every unit of
    # the target is installed under its own name and the previous revision's all stop).
    units: UnitPlan | None = None
    # The digest each container unit runs (installed name → `name@sha256:…`), decided in
    # `locking`: pulled for the units this deploy starts, carried over for the running
    # ones (engine/container_images.py). Its `starting`, its rollback and later restarts
    # install these, never a tag that may have moved. None: written before pins were kept.
    images: Mapping[str, str] | None = None

    @property
    def unassigning(self) -> bool:
        return self.to_revision is None

    @property
    def traffic_kept(self) -> bool:
        return self.units is not None and self.units.traffic_kept

    @property
    def finished(self) -> bool:
        return self.outcome is not None
