"""What a rollout waits for, as `flotilla rollout status` (and `watch`) says it.

The scheduler's own planner (`scheduler.rollout.plan_service`) is run on what status
reads (the service, its live and dead instances, the deploys that matter, its alarms), so
status names exactly the waits a scheduler pass would find: a free slot, deploys under
way, a bake, a webhook gate, the alarms, a pause step, a paused or held service, the
progress deadline (`scheduler.waits`). Nothing is written and no webhook is called: a
step whose webhooks are due says they are called at the next pass. The CLI adds what only
the instances show: instances that are *silent* (no heartbeat for two of their agent's
heartbeats) and *unhealthy* ones (a deploy waiting for its health check, or rolling back).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.errors import NotFoundError
from flotilla.engine.ports import StateStore
from flotilla.engine.records import Instance, Service, deploy_id_for
from flotilla.machines.deploy import FAILURE_STATES, State
from flotilla.scheduler.gates import GateReaders, Readings, read_alarms, watches_alarms
from flotilla.scheduler.rollout import (
    Phase,
    ServiceInputs,
    deploy_window,
    needs_deploy_list,
    plan_service,
    split_live,
    unsettled,
)
from flotilla.scheduler.waits import Wait

if TYPE_CHECKING:
    from flotilla.cli.progress import Progress
    from flotilla.cli.wiring import Wiring

SILENT = "silent"
UNHEALTHY = "unhealthy"
MAX_NAMED = 5  # instances named in one wait's text


def read_inputs(
    store: StateStore, service: Service, now: datetime, ttl: timedelta
) -> tuple[list[Instance], list[Instance], dict[str, DeployCheckpoint]]:
    """The live and dead instances of `service` and the deploys that matter, read the
    way a scheduler pass reads them (`SchedulerPass._inputs`)."""
    live, dead = split_live(store.list_instances(service.name), now, ttl)
    deploys: dict[str, DeployCheckpoint] = {}
    if needs_deploy_list(service):
        listed = store.list_deploys(service.name, since=deploy_window(service))
        deploys = {d.id: d for d in listed}
    for instance in live:
        deploy_id = deploy_id_for(instance)
        if unsettled(instance) and deploy_id not in deploys:
            with contextlib.suppress(NotFoundError):  # its agent has not started it yet
                deploys[deploy_id] = store.get_deploy(deploy_id)
    return live, dead, deploys


def gate_readings(wiring: Wiring, service: Service) -> Readings:
    """The service's alarms as a scheduler pass would read them (none when it reads none)."""
    if not watches_alarms(service):
        return Readings()
    return read_alarms(GateReaders(alarms=wiring.alarms), service.rollout)


def planned_waits(
    service: Service,
    live: Sequence[Instance],
    dead: Sequence[Instance],
    deploys: Mapping[str, DeployCheckpoint],
    now: datetime,
    readings: Readings | None,
) -> tuple[Wait, ...]:
    """The waits the scheduler's planner finds on these inputs (nothing is written)."""
    state = service.rollout_state
    inputs = ServiceInputs(service, live, dead, deploys, now, readings or Readings())
    fence_lock = state.fence_lock or "scheduler"
    return plan_service(inputs, fence_lock=fence_lock, fence=state.fence).waits


def instance_waits(progress: Progress) -> list[Wait]:
    """Silent and unhealthy instances, which hold the rollout's slots or its step."""
    found: list[Wait] = []
    silent = [item for item in progress.instances if progress.silent_for(item) is not None]
    if silent:
        names = _names([item.instance.id for item in silent])
        found.append(
            Wait(
                SILENT,
                f"{len(silent)} silent instance(s) ({names}): no heartbeat for two of their "
                "agent's heartbeats; is the agent running? They stop counting once the "
                "instance TTL passes",
                min(item.instance.heartbeat_at for item in silent) + progress.ttl,
            )
        )
    checking: list[str] = []
    failing: list[str] = []
    until: list[datetime] = []
    for item in progress.instances:
        deploy = item.deploy
        if item.phase is not Phase.IN_FLIGHT or deploy is None or deploy.finished:
            continue
        if deploy.state == State.HEALTHY:
            checking.append(item.instance.id)
            if "health" in deploy.deadlines:
                until.append(deploy.deadlines["health"])
        elif deploy.state in FAILURE_STATES:
            failing.append(item.instance.id)
    if checking:
        found.append(
            Wait(
                UNHEALTHY,
                f"{len(checking)} instance(s) not healthy yet ({_names(checking)}): their "
                "units must stay active and the load balancer must report them healthy",
                min(until, default=None),
            )
        )
    if failing:
        found.append(
            Wait(
                UNHEALTHY,
                f"{len(failing)} instance(s) failed to deploy and roll back to their previous "
                f"revision ({_names(failing)})",
            )
        )
    return found


def waits_json(waits: Sequence[Wait]) -> list[dict[str, Any]]:
    return [
        {"kind": w.kind, "text": w.text, "until": None if w.until is None else w.until.isoformat()}
        for w in waits
    ]


def wait_lines(waits: Sequence[Wait], now: datetime) -> list[str]:
    """One line per wait, with the time left when it ends by itself."""
    lines = []
    for wait in waits:
        line = f"{wait.kind}: {wait.text}"
        if wait.until is not None:
            left = max(0, round((wait.until - now).total_seconds()))
            line += f" ({_left(left)} left)"
        lines.append(line)
    return lines


def _left(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _names(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:MAX_NAMED])
    return shown + (f" and {len(ids) - MAX_NAMED} more" if len(ids) > MAX_NAMED else "")
