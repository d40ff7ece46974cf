"""Which assignments a rollout's plan writes, pure: the moves within the free slots and
the step's room (`paced_moves`), and what a hold puts back (`held`). The rules are
`scheduler.rollout`'s; this module only counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.records import Instance, RolloutState, RolloutStatus, deploy_id_for
from flotilla.scheduler.phases import Phase, unsettled


@dataclass(frozen=True)
class Assignment:
    """One conditional assignment write."""

    instance_id: str
    revision: str | None
    expected_version: int


def paced_moves(
    live: Sequence[Instance],
    phases: Mapping[str, Phase],
    target: Mapping[str, str | None],
    state: RolloutState,
    halted: set[str],
    slots: int,
    room: int,
    begun: frozenset[str],
    deploys: Mapping[str, DeployCheckpoint],
) -> tuple[list[Assignment], int, int, int]:
    """The assignment writes within the free slots and the step's room; returns (writes,
    waiting for a slot or a stopped revision, left for a later step, in flight)."""
    by_id = {i.id: i for i in live}
    in_flight = {iid for iid, phase in phases.items() if phase is Phase.IN_FLIGHT}
    free = max(0, slots - len(in_flight))
    writes: list[Assignment] = []
    waiting = later = 0
    for instance_id, revision in target.items():
        instance = by_id[instance_id]
        if revision == instance.assigned_revision and not _retry(instance, phases, state, deploys):
            continue
        needs_deploy = revision is not None and revision != instance.current_revision
        if needs_deploy and revision in halted:
            waiting += 1
            continue
        if needs_deploy and instance_id not in in_flight:
            # A move of an instance that runs a revision counts against the step; one that
            # joins (runs nothing) does not (scheduler.steps).
            stepped = instance.current_revision is not None and instance_id not in begun
            if stepped and room == 0:
                later += 1
                continue
            if free == 0:
                waiting += 1
                continue
            free -= 1
            room -= stepped
            in_flight.add(instance_id)
        writes.append(Assignment(instance_id, revision, instance.assignment_version))
    return writes, waiting, later, len(in_flight)


def _retry(
    instance: Instance,
    phases: Mapping[str, Phase],
    state: RolloutState,
    deploys: Mapping[str, DeployCheckpoint],
) -> bool:
    """A new rollout gives an instance that failed in an earlier one a fresh attempt."""
    if phases[instance.id] is not Phase.FAILED or state.status is not RolloutStatus.ROLLING:
        return False
    own = deploys.get(deploy_id_for(instance))
    return own is not None and state.started_at is not None and own.created_at < state.started_at


def held(
    live: Sequence[Instance], phases: Mapping[str, Phase], running: set[str]
) -> tuple[list[Assignment], int, int, int]:
    """A hold keeps what runs: deploys under way finish, and an instance assigned a move its
    agent has not begun is put back on the revision it runs (a move that needs no deploy)."""
    back = [
        Assignment(i.id, i.current_revision, i.assignment_version)
        for i in live
        if phases[i.id] is Phase.IN_FLIGHT
        and i.id not in running
        and i.current_revision is not None
        and unsettled(i)
    ]
    return back, 0, 0, len(running & {i.id for i in live})
