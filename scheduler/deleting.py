"""A service being deleted (`flotilla service delete`), pure: every instance is assigned
no revision, so each agent that runs something runs its unassignment deploy (it leaves
the load balancer, stops and removes Flotilla's units); once no live instance runs or is
assigned anything and no deploy is unfinished, the record may go (`deletable`).

No rollout goes on meanwhile: the weights are left as they were (nothing may change
them), nothing is paced by steps or gates, and no record change is planned; the record's
last write is its (conditional) delete, by the pass (`scheduler.pass_`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.records import Instance
from flotilla.scheduler.assignments import Assignment
from flotilla.scheduler.phases import Phase, phase_of, running_deploys
from flotilla.scheduler.waits import DEPLOYS, FAILED_UNASSIGNMENTS, Wait


def unassignments(instances: Iterable[Instance]) -> list[Assignment]:
    """No revision for every instance (live or dead) that is assigned one."""
    return [
        Assignment(i.id, None, i.assignment_version)
        for i in sorted(instances, key=lambda i: i.id)
        if i.assigned_revision is not None
    ]


def unassigning(
    live: Sequence[Instance], deploys: Mapping[str, DeployCheckpoint]
) -> tuple[int, int]:
    """(instances whose unassignment is pending or running, instances whose failed),
    counted as they stand once each is assigned none (a deploy id is per assignment, so
    an instance still to be written is one whose unassignment is pending)."""
    after = [
        i
        if i.assigned_revision is None
        else dataclasses.replace(
            i, assigned_revision=None, assignment_version=i.assignment_version + 1
        )
        for i in live
    ]
    running = running_deploys(deploys.values())
    phases = [phase_of(i, deploys, running) for i in after]
    return phases.count(Phase.IN_FLIGHT), phases.count(Phase.FAILED)


def deletable(live: Sequence[Instance], deploys: Iterable[DeployCheckpoint]) -> bool:
    """Whether nothing holds the record any more: every live instance runs nothing and is
    assigned nothing, and no deploy of the service is unfinished (one that began before
    its instance was unassigned would still need the record to finish)."""
    idle = all(i.current_revision is None and i.assigned_revision is None for i in live)
    return idle and not running_deploys(deploys)


def deleting_waits(name: str, in_flight: int, failed: int) -> tuple[Wait, ...]:
    """What a deletion waits for, in words (`rollout status`)."""
    waits = []
    if in_flight:
        waits.append(
            Wait(DEPLOYS, f"being deleted: {in_flight} instance(s) still being unassigned")
        )
    if failed:
        waits.append(
            Wait(
                FAILED_UNASSIGNMENTS,
                f"being deleted: the unassignment of {failed} instance(s) failed and they "
                f"still run their units (see `flotilla history {name}`); the deletion waits "
                "until those instances are stopped or terminated (a dead instance holds "
                "nothing)",
            )
        )
    return tuple(waits)
