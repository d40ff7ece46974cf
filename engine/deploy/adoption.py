"""Nothing adopted blindly: what an agent reads before it acts on it is checked first.

A worker of one service may be able to write items it should not (issue 14: a forged
assignment, a pre-planted deploy id `<instance>.<assignment_version>`, a revision item whose
content is not its id). So before the agent deploys, it checks that
- an instance item is its own instance, of its own service (`check_instance`);
- an existing checkpoint it would adopt (the id it would create, or one left in flight) is
  of its own service and instance and, when it adopts the id of a new assignment, moves to
  the assigned revision (`check_checkpoint`);
- a fetched revision is of the service asked for, under the id asked for, and its content
  still hashes to that id (`check_revision`, before anything reaches disk or systemd).
A mismatch raises `AdoptionRefusedError` naming what differs. The agent reports it
(`report_refusal`: one error log line and an error span) and leaves the item untouched:
an item it did not write is evidence, not something to repair.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Final

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.deploy import telemetry
from flotilla.engine.deploy.errors import AdoptionRefusedError
from flotilla.engine.errors import MisfiledItemError
from flotilla.engine.records import Instance, Revision, instance_key
from flotilla.engine.revisions import verify_revision_id

log = logging.getLogger(__name__)


def _differences(pairs: list[tuple[str, object, object]]) -> list[str]:
    return [
        f"its {field} is {found!r}, not {wanted!r}"
        for field, found, wanted in pairs
        if found != wanted
    ]


def check_instance(instance: Instance, *, service: str, instance_id: str) -> None:
    """The instance item must be this agent's own instance, of this agent's service."""
    differences = _differences(
        [("id", instance.id, instance_id), ("service", instance.service, service)],
    )
    if differences:
        raise AdoptionRefusedError(
            f"refusing the instance item {instance.id!r}: {'; '.join(differences)}. It was "
            "written by someone else (a forged assignment?); nothing is deployed from it. "
            "Check who writes this instance's items"
        )


class _Unchecked(Enum):
    TARGET = "any target"


# `to_revision` not checked (None is a target too: an unassignment's).
ANY_TARGET: Final = _Unchecked.TARGET


def check_checkpoint(
    checkpoint: DeployCheckpoint,
    *,
    service: str,
    instance_id: str,
    to_revision: str | _Unchecked | None = ANY_TARGET,
) -> None:
    """An existing checkpoint is adopted only if it is this agent's deploy: its service, its
    instance and (for a new assignment's id) the assigned revision."""
    pairs: list[tuple[str, object, object]] = [
        ("service", checkpoint.service, service),
        ("instance_id", checkpoint.instance_id, instance_id),
    ]
    if to_revision is not ANY_TARGET:
        pairs.append(("to_revision", checkpoint.to_revision, to_revision))
    differences = _differences(pairs)
    if not checkpoint.id.startswith(f"{instance_key(service, instance_id)}."):
        differences.append(f"its id does not name instance {instance_id!r} of {service!r}")
    if differences:
        raise AdoptionRefusedError(
            f"refusing to adopt deploy checkpoint {checkpoint.id!r}: {'; '.join(differences)}. "
            "This agent did not write it (a pre-planted deploy id?); it is left untouched and "
            "nothing is deployed from it. Delete it once examined, or wait for a new assignment"
        )


def misfiled_checkpoint(deploy_id: str, misfiled: MisfiledItemError) -> AdoptionRefusedError:
    """The refusal of a checkpoint found under this deploy's id whose stored key does not
    carry the service and instance its fields claim (adapters/items)."""
    return AdoptionRefusedError(
        f"refusing to adopt deploy checkpoint {deploy_id!r}: {misfiled.message}. This agent "
        "did not write it (a pre-planted deploy id?); it is left untouched and nothing is "
        "deployed from it. Delete it once examined, or wait for a new assignment"
    )


def misfiled_instance(misfiled: MisfiledItemError) -> AdoptionRefusedError:
    """The refusal of this agent's instance item when it claims another service or instance
    than its stored key carries."""
    return AdoptionRefusedError(
        f"refusing the instance item: {misfiled.message}. It was written by someone else (a "
        "forged assignment?); nothing is deployed from it. Check who writes this instance's "
        "items"
    )


def check_resumable(checkpoint: DeployCheckpoint, instance: Instance, *, service: str) -> None:
    """An unfinished checkpoint found at start is resumed only if this instance's agent can
    have left it: its own service and instance; an id no newer than the instance's
    assignment (and, for the current one, moving to the assigned revision); and the
    instance's current revision one of its two ends (before `healthy` it is still the
    `from`, after it the `to`), so a forged `from` cannot have a rollback stop what runs."""
    check_checkpoint(checkpoint, service=service, instance_id=instance.id)
    _, _, suffix = checkpoint.id.rpartition(".")
    differences = []
    if not suffix.isdigit() or int(suffix) > instance.assignment_version:
        differences.append(
            f"its id is not one of this instance's assignments (up to version "
            f"{instance.assignment_version})"
        )
    elif int(suffix) == instance.assignment_version and (
        checkpoint.to_revision != instance.assigned_revision
    ):
        differences.append(
            f"its to_revision is {checkpoint.to_revision!r}, not the assigned "
            f"{instance.assigned_revision!r}"
        )
    if instance.current_revision not in (checkpoint.from_revision, checkpoint.to_revision):
        differences.append(
            f"the instance runs {instance.current_revision!r}, neither of its revisions"
        )
    if differences:
        raise AdoptionRefusedError(
            f"refusing to resume deploy checkpoint {checkpoint.id!r}: {'; '.join(differences)}. "
            "This agent did not leave it (a pre-planted deploy?); it is left untouched and "
            "nothing is deployed from it. Delete it once examined"
        )


def check_revision(revision: Revision, *, service: str, revision_id: str) -> None:
    """A fetched revision must be the one asked for, and its content must hash to its id."""
    differences = _differences(
        [("service", revision.service, service), ("id", revision.id, revision_id)]
    )
    if not differences and not verify_revision_id(revision):
        differences.append("its content (unit files or sealed environment) does not hash to it")
    if differences:
        raise AdoptionRefusedError(
            f"refusing revision {revision_id[:12]} of {service}: {'; '.join(differences)}. "
            "The stored item was altered; nothing of it is installed. Add the revision again "
            "from its source"
        )


def report_refusal(
    refused: AdoptionRefusedError, *, service: str, instance: str, deploy_id: str
) -> None:
    """One error line (with the identifiers every deploy line carries) and an error span."""
    attributes: dict[str, str | int | bool | float] = {
        "flotilla.service": service,
        "flotilla.instance": instance,
        "flotilla.deploy": deploy_id,
        "flotilla.refused": True,
    }
    with telemetry.call_span("deploy.refused", attributes) as span:
        telemetry.mark_error(span, refused.message)
    telemetry.flush()
    fields = {"deploy_id": deploy_id, "service": service, "instance": instance, "state": "refused"}
    log.error("%s", refused.message, extra=fields)
