"""Where each live instance of a service stands in a rollout, pure: settled, in flight or
failed (`phase_of`), and which instances and deploys a pass must read to know it.

The scheduler's planner, `rollout status` and the trace agree on these words because
they all call this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum

from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.liveness import is_alive
from flotilla.engine.records import Instance, RolloutStatus, Service, deploy_id_for

FAILED_OUTCOMES = frozenset({Outcome.ROLLED_BACK, Outcome.FAILED})


class Phase(StrEnum):
    SETTLED = "settled"  # runs its assignment (none: runs nothing)
    IN_FLIGHT = "in_flight"  # its deploy (or unassignment) is pending or running
    FAILED = "failed"  # the deploy of its assignment failed; it runs its old revision


def split_live(
    instances: Iterable[Instance], now: datetime, ttl: timedelta
) -> tuple[list[Instance], list[Instance]]:
    live: list[Instance] = []
    dead: list[Instance] = []
    for instance in instances:
        (live if is_alive(instance, now, ttl) else dead).append(instance)
    return live, dead


def unsettled(instance: Instance) -> bool:
    """Assigned a revision it does not run (yet, or any more), or assigned none while it
    still runs one: its unassignment deploy has not finished (or failed). An instance
    assigned none that runs nothing is settled: it has nothing to wait for."""
    return instance.assigned_revision != instance.current_revision


def needs_deploy_list(service: Service) -> bool:
    """Whether a pass must list the service's recent deploys: during a rollout, and while
    the service is being deleted (its instances' unassignments are its deploys then)."""
    return service.deleting or service.rollout_state.status is not RolloutStatus.COMPLETE


def deploy_window(service: Service) -> datetime | None:
    state = service.rollout_state
    return state.watch_since or state.started_at


def running_deploys(deploys: Iterable[DeployCheckpoint]) -> set[str]:
    """Ids of the instances with an unfinished deploy."""
    return {d.instance_id for d in deploys if not d.finished}


def phase_of(
    instance: Instance, deploys: Mapping[str, DeployCheckpoint], running: set[str]
) -> Phase:
    """`running` is `running_deploys(deploys.values())`, computed once per service."""
    if instance.id in running:
        return Phase.IN_FLIGHT
    own = deploys.get(deploy_id_for(instance))
    if not unsettled(instance):
        return Phase.SETTLED
    if own is not None and own.outcome in FAILED_OUTCOMES:
        return Phase.FAILED
    return Phase.IN_FLIGHT  # not picked up by its agent yet
