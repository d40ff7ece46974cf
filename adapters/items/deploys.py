"""Deploy checkpoints (with their history of transitions) as stored items, and back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flotilla.adapters.items import common
from flotilla.adapters.items.common import Item
from flotilla.engine.checkpoint import (
    DeployCheckpoint,
    HookOutcome,
    LeaseRef,
    Outcome,
    Transition,
    UnitPlan,
)
from flotilla.engine.errors import MisfiledItemError
from flotilla.engine.records import instance_key
from flotilla.machines.deploy import State

DEPLOY_SCHEMA = 1


def _stored_instance(checkpoint: DeployCheckpoint) -> str:
    """The by-instance index's key: the instance's key (`<service>/<instance id>`), so that
    IAM confines a worker's resume query to its own service; a checkpoint stored before keys
    carried the service keeps its bare instance id."""
    if common.is_unscoped(checkpoint.id):
        return checkpoint.instance_id
    return instance_key(checkpoint.service, checkpoint.instance_id)


# A brief deploy (`StateStore.list_deploys(brief=True)`) leaves out each step's record,
# the unit plan and the pinned images: most of a finished deploy's item, and most of what
# its reader parses (botocore walks every nested value). The scheduler reads none of them,
# and lists a rollout's recent deploys at every pass. What a brief item holds, by name:
BRIEF_LEFT_OUT = frozenset({"history", "units", "images"})
BRIEF_ATTRIBUTES = (
    "schema", "id", "service", "instance_id", "from_revision", "to_revision", "state",
    "machine_version", "version", "created_ms", "updated_ms", "deadlines_ms", "attempts",
    "lease", "trace_parent", "last_span_id", "outcome", "failed_in", "error",
    "rollback_error",
)  # fmt: skip


def deploy_to_item(checkpoint: DeployCheckpoint) -> Item:
    lease = checkpoint.lease
    return {
        "schema": DEPLOY_SCHEMA,
        "id": checkpoint.id,
        "service": checkpoint.service,
        "instance_id": _stored_instance(checkpoint),
        "from_revision": checkpoint.from_revision,
        "to_revision": checkpoint.to_revision,
        "state": checkpoint.state,
        "machine_version": checkpoint.machine_version,
        "version": checkpoint.version,
        "created_ms": common.ms(checkpoint.created_at),
        "updated_ms": common.ms(checkpoint.updated_at),
        "deadlines_ms": {name: common.ms(at) for name, at in checkpoint.deadlines.items()},
        "attempts": dict(checkpoint.attempts),
        "lease": None
        if lease is None
        else {"name": lease.name, "slot": lease.slot, "owner": lease.owner, "token": lease.token},
        "trace_parent": checkpoint.trace_parent,
        "last_span_id": checkpoint.last_span_id,
        "outcome": None if checkpoint.outcome is None else checkpoint.outcome.value,
        "failed_in": checkpoint.failed_in,
        "error": checkpoint.error,
        "rollback_error": checkpoint.rollback_error,
        "history": [_transition_to_item(t) for t in checkpoint.history],
        # Machine version 2 on; still schema 1: an older reader ignores it (and refuses
        # the machine version).
        **({} if checkpoint.units is None else {"units": _plan_to_item(checkpoint.units)}),
        # Added later, still schema 1: an item without it was written before images were
        # pinned, and reads as None (nothing pinned).
        **({} if checkpoint.images is None else {"images": dict(checkpoint.images)}),
    }


def _plan_to_item(plan: UnitPlan) -> Item:
    return {
        "before": dict(plan.before),
        "after": dict(plan.after),
        "changed": list(plan.changed),
        "removed": list(plan.removed),
        "traffic_kept": plan.traffic_kept,
    }


def _images_from_item(item: Mapping[str, Any] | None) -> dict[str, str] | None:
    if item is None:
        return None
    return {str(name): str(reference) for name, reference in item.items()}


def _plan_from_item(item: Mapping[str, Any] | None) -> UnitPlan | None:
    if item is None:
        return None
    return UnitPlan(
        before={str(k): str(v) for k, v in item["before"].items()},
        after={str(k): str(v) for k, v in item["after"].items()},
        changed=tuple(str(u) for u in item["changed"]),
        removed=tuple(str(u) for u in item["removed"]),
        traffic_kept=bool(item["traffic_kept"]),
    )


def _transition_to_item(transition: Transition) -> Item:
    return {
        "state": transition.state,
        "started_ms": common.ms(transition.started_at),
        "ended_ms": common.ms(transition.ended_at),
        "attempt": transition.attempt,
        "error": transition.error,
        "skipped": transition.skipped,
        **({} if transition.skip_reason is None else {"skip_reason": transition.skip_reason}),
        "resumed": transition.resumed,
        "span_id": transition.span_id,
        # Machine version 3 on, and only where a hook ran: an older reader ignores it.
        **({"hooks": [_hook_to_item(h) for h in transition.hooks]} if transition.hooks else {}),
    }


def _hook_to_item(outcome: HookOutcome) -> Item:
    return {
        "hook": outcome.hook,
        "revision": outcome.revision,
        "timeout_seconds": outcome.timeout_seconds,
        "result": outcome.result,
        "exit_status": outcome.exit_status,
        # A string: DynamoDB numbers come back as Decimal, and a duration is only shown.
        "duration_seconds": f"{outcome.duration_seconds:.3f}",
    }


def _hook_from_item(item: Mapping[str, Any]) -> HookOutcome:
    status = item.get("exit_status")
    return HookOutcome(
        hook=str(item["hook"]),
        revision=str(item["revision"]),
        timeout_seconds=int(item["timeout_seconds"]),
        result=str(item["result"]),
        exit_status=None if status is None else int(status),
        duration_seconds=float(item["duration_seconds"]),
    )


def _transition_from_item(item: Mapping[str, Any]) -> Transition:
    started = common.time(item["started_ms"])
    if started is None:
        raise ValueError("transition started_ms is empty")
    return Transition(
        state=str(item["state"]),
        started_at=started,
        ended_at=common.time(item.get("ended_ms")),
        attempt=int(item["attempt"]),
        error=common.optional_str(item.get("error")),
        skipped=bool(item.get("skipped", False)),
        skip_reason=common.optional_str(item.get("skip_reason")),
        resumed=bool(item.get("resumed", False)),
        span_id=common.optional_str(item.get("span_id")),
        hooks=tuple(_hook_from_item(h) for h in item.get("hooks") or ()),
    )


def deploy_from_item(item: Mapping[str, Any], *, brief: bool = False) -> DeployCheckpoint:
    """A deploy from its item; `brief`: from a brief item (BRIEF_ATTRIBUTES), its history
    empty and no plan or images. A brief item stored before `failed_in` was (by an
    agent older than that field) reads without it."""
    common.check_schema(item, "deploy", DEPLOY_SCHEMA)
    stored_instance = str(item.get("instance_id"))
    # A checkpoint stored before keys carried the service is read as it is (history and
    # traces keep it); no worker's grant reaches its key any more, so none can change it.
    if not common.is_unscoped(item.get("id")):
        expected_instance = instance_key(str(item.get("service")), _bare(stored_instance))
        if stored_instance != expected_instance:
            raise MisfiledItemError(
                f"stored deploy item {item['id']!r} claims service {item.get('service')!r} "
                f"but is indexed under instance {stored_instance!r}: refused (it was not "
                "written by that service's workers)"
            )
        deploy_id = str(item["id"])
        assignment = deploy_id.removeprefix(f"{expected_instance}.")
        if assignment == deploy_id or not assignment.isdigit():
            raise MisfiledItemError(
                f"stored deploy item {deploy_id!r} claims service {item.get('service')!r} "
                f"and instance {stored_instance!r} but its key is not theirs: refused (it was "
                "not written by that service's workers)"
            )

    def build() -> DeployCheckpoint:
        lease = item.get("lease")
        outcome = item.get("outcome")
        created = common.time(item["created_ms"])
        updated = common.time(item["updated_ms"])
        if created is None or updated is None:
            raise ValueError("created_ms or updated_ms is empty")
        deadlines: dict[str, datetime] = {}
        for name, value in item["deadlines_ms"].items():
            moment = common.time(value)
            if moment is not None:
                deadlines[str(name)] = moment
        history = () if brief else tuple(_transition_from_item(t) for t in item["history"])
        return DeployCheckpoint(
            id=str(item["id"]),
            service=str(item["service"]),
            instance_id=_bare(str(item["instance_id"])),
            from_revision=common.optional_str(item.get("from_revision")),
            to_revision=common.optional_str(item.get("to_revision")),
            state=str(item["state"]),
            machine_version=int(item["machine_version"]),
            created_at=created,
            updated_at=updated,
            version=int(item["version"]),
            deadlines=deadlines,
            attempts={str(k): int(v) for k, v in item["attempts"].items()},
            lease=None
            if lease is None
            else LeaseRef(
                str(lease["name"]), int(lease["slot"]), str(lease["owner"]), int(lease["token"])
            ),
            trace_parent=common.optional_str(item.get("trace_parent")),
            last_span_id=common.optional_str(item.get("last_span_id")),
            outcome=None if outcome is None else Outcome(outcome),
            failed_in=_failed_in(item, history),
            error=common.optional_str(item.get("error")),
            rollback_error=common.optional_str(item.get("rollback_error")),
            history=history,
            units=_plan_from_item(item.get("units")),
            images=_images_from_item(item.get("images")),
        )

    return common.read("deploy", item, build)


def _bare(stored_instance: str) -> str:
    return stored_instance.rpartition("/")[2]


def _failed_in(item: Mapping[str, Any], history: tuple[Transition, ...]) -> str | None:
    """The stored `failed_in`; items written before it was stored (still schema 1: an
    older reader ignores the field) recorded it only as the state visited just before
    `failed` in the history, so it is read from there once, here."""
    if "failed_in" in item:
        return common.optional_str(item["failed_in"])
    states = [t.state for t in history]
    if State.FAILED not in states:
        return None
    index = states.index(State.FAILED)
    return states[index - 1] if index > 0 else None
