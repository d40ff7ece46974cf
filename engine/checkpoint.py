"""The deploy checkpoint: everything needed to resume a deploy after a crash.

A checkpoint is written conditionally on `version` after every step, so two agent
processes on one instance can never both advance the same deploy. Deadlines and
attempt counts live here, not in memory, so a resumed deploy gets no fresh budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from flotilla.machines.deploy import Outcome

__all__ = ["DeployCheckpoint", "LeaseRef", "Outcome", "Transition"]  # Outcome: the machine's


@dataclass(frozen=True)
class Transition:
    """One visit of a state, as the trace viewer shows it."""

    state: str
    started_at: datetime
    ended_at: datetime | None = None
    attempt: int = 1
    error: str | None = None
    skipped: bool = False  # e.g. load-balancer states of a service without one
    resumed: bool = False  # this visit began in a restarted agent
    span_id: str | None = None


@dataclass(frozen=True)
class LeaseRef:
    """The lock slot a deploy holds, as recorded in its checkpoint."""

    name: str
    slot: int
    owner: str
    token: int


@dataclass(frozen=True)
class DeployCheckpoint:
    """One instance moving from its current revision to its assigned one."""

    id: str
    service: str
    instance_id: str
    from_revision: str | None
    to_revision: str
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

    @property
    def finished(self) -> bool:
        return self.outcome is not None
