"""Gates and the progress deadline: what, besides its deploys, holds or fails a rollout.

- **Alarms**: the service's CloudWatch alarms are read at every pass of a rollout (and at
  least every `ALARM_POLL` while it rolls). One in ALARM while the rollout rolls (during
  a step, its bake, a pause or a gate) is a failure: the rollout's failure action. While
  they cannot be read, or one of them no longer exists, nothing more moves and no step
  advances (deploys under way finish); a revert reads none.
- **Webhooks**: before a step moves anything, each of its webhooks is POSTed a JSON
  document (`webhook_payload`). The step opens when every one answered 2xx within
  `WEBHOOK_TIMEOUT`; otherwise it waits, with the answer as its reason, and the webhooks
  are called again `GATE_RETRY` later. The answer is stored (`RolloutState.gate`), so a
  new leader neither calls a passed gate again nor forgets a closed one. A promotion opens
  it; a revert calls none.
- **Progress deadline**: while instances deploy, some deploy of the rollout must finish
  within `progress_deadline_seconds` of the last progress: the rollout's start, its
  current step's start, a resume or promotion, or the last deploy that finished. Time
  spent baking or waiting at a gate or pause has nothing deploying and is not counted.
  When it passes, the failure action runs. 0 turns the deadline off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.errors import FlotillaError
from flotilla.engine.ports import Alarms, AlarmState, Webhooks
from flotilla.engine.records import (
    GateResult,
    HistoryEntry,
    RolloutPolicy,
    RolloutState,
    RolloutStatus,
    RolloutStep,
    Service,
)

ALARM_POLL = timedelta(seconds=10)
GATE_RETRY = timedelta(seconds=30)
WEBHOOK_TIMEOUT = timedelta(seconds=5)
WEBHOOK_SCHEMA = 1
PROGRESS_KINDS = frozenset({"resumed", "promoted"})  # operator entries that restart the clock


@dataclass(frozen=True)
class Readings:
    """What a pass read about a service's gates before planning it."""

    alarms: Mapping[str, AlarmState] | None = None  # by name; a missing name does not exist
    alarms_error: str | None = None  # why they could not be read
    webhooks: GateResult | None = None  # the webhooks called in this pass


def watches_alarms(service: Service) -> bool:
    """Whether a pass must read `service`'s alarms before planning it."""
    state = service.rollout_state
    if not service.rollout.alarms or service.paused:
        return False
    starting = service.weights != state.weights
    return starting or (state.status is RolloutStatus.ROLLING and not state.fast)


def firing(policy: RolloutPolicy, readings: Readings) -> list[str]:
    """The service's alarms that were read in ALARM."""
    found = readings.alarms or {}
    return [name for name in policy.alarms if found.get(name) is AlarmState.ALARM]


def alarms_unknown(policy: RolloutPolicy, readings: Readings) -> str | None:
    """Why the alarms cannot be judged this pass, if they cannot."""
    if not policy.alarms:
        return None
    if readings.alarms_error is not None:
        return f"the alarms could not be read: {readings.alarms_error}"
    if readings.alarms is None:
        return "the alarms were not read"
    missing = [name for name in policy.alarms if name not in readings.alarms]
    if missing:
        return (
            f"alarm {', '.join(missing)} does not exist in CloudWatch; create it, or change "
            "the service's --alarm"
        )
    return None


@dataclass(frozen=True)
class Gate:
    """A step's webhook gate as a pass finds it."""

    open: bool
    due: bool  # the webhooks must be called (again) now (why it waits: scheduler.waits)


def gate_of(policy: RolloutPolicy, state: RolloutState, index: int, now: datetime) -> Gate:
    if not policy.webhooks or state.fast or state.skip_step == index:
        return Gate(open=True, due=False)
    gate = state.gate
    if gate is None or gate.step != index:
        return Gate(open=False, due=True)
    if gate.passed:
        return Gate(open=True, due=False)
    return Gate(open=False, due=now >= gate.at + GATE_RETRY)


def webhook_payload(
    service: Service, state: RolloutState, steps: Sequence[RolloutStep], index: int
) -> dict[str, Any]:
    """What each webhook of a step is sent (docs/events.md has the schema)."""
    step = steps[index]
    return {
        "schema": WEBHOOK_SCHEMA,
        "kind": "confirm_step",
        "service": service.name,
        "step": {
            "index": index + 1,
            "of": len(steps),
            "amount": step.amount,
            "bake_seconds": step.bake_seconds,
        },
        "weights": dict(state.weights),
        "rollout_started_at": None if state.started_at is None else state.started_at.isoformat(),
    }


def call_webhooks(
    webhooks: Webhooks,
    urls: Sequence[str],
    payload: Mapping[str, Any],
    *,
    step: int,
    at: datetime,
    timeout: timedelta = WEBHOOK_TIMEOUT,
) -> GateResult:
    """Call each webhook in turn; the gate passes only if every one answered 2xx. The
    first refusal ends the round: the others are asked again with it."""
    for url in urls:
        answer = webhooks.call(url, payload, timeout=timeout)
        if not answer.passed:
            return GateResult(step, False, at, f"webhook {url} {answer.reason}"[:300])
    return GateResult(step, True, at)


def progress_since(
    state: RolloutState, deploys: Iterable[DeployCheckpoint], history: Sequence[HistoryEntry]
) -> datetime | None:
    """The last progress of the rollout (the module's doc)."""
    started = state.started_at
    times = [t for t in (started, state.step_since, state.resumed_at) if t is not None]
    if started is not None:
        times += [d.updated_at for d in deploys if d.finished and d.created_at >= started]
        times += [e.at for e in history if e.kind in PROGRESS_KINDS and e.at >= started]
    return max(times, default=None)


def deadline_of(
    policy: RolloutPolicy,
    state: RolloutState,
    deploys: Iterable[DeployCheckpoint],
    history: Sequence[HistoryEntry],
) -> datetime | None:
    """When the progress deadline passes if no deploy finishes first (None: no deadline)."""
    if not policy.progress_deadline_seconds or state.status is not RolloutStatus.ROLLING:
        return None
    since = progress_since(state, deploys, history)
    if since is None:
        return None
    return since + timedelta(seconds=policy.progress_deadline_seconds)


def deadline_reason(policy: RolloutPolicy, since: datetime, deploying: Sequence[str]) -> str:
    shown = ", ".join(deploying[:5]) + (", ..." if len(deploying) > 5 else "")
    return (
        f"no deploy of the rollout finished within its progress deadline of "
        f"{policy.progress_deadline_seconds} s (since {since:%H:%M:%S} UTC); still deploying: "
        f"{shown}"
    )


@dataclass(frozen=True)
class GateReaders:
    """The ports a scheduler reads gates through; either may be missing (a rollout that
    needs it then waits, saying so)."""

    alarms: Alarms | None = None
    webhooks: Webhooks | None = None


def read_alarms(readers: GateReaders, policy: RolloutPolicy) -> Readings:
    """The service's alarms, or why they could not be read."""
    if readers.alarms is None:
        return Readings(alarms_error="this scheduler has no alarm reader")
    try:
        return Readings(alarms=readers.alarms.states(list(policy.alarms)))
    except FlotillaError as failed:
        return Readings(alarms_error=failed.message)
