"""Records to stored items and back.

An item is a plain dict of str, int, bool, bytes, None, lists and dicts: what every
store adapter can hold (the DynamoDB adapter maps it to attribute values, the memory
store keeps copies). Every item carries `schema`; reading an item written by a newer
schema, or one with missing or mistyped fields, raises `SchemaError` with a clear
message instead of a KeyError deep in the engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from flotilla.engine.checkpoint import DeployCheckpoint, LeaseRef, Outcome, Transition
from flotilla.engine.clock import from_epoch_ms, to_epoch_ms
from flotilla.engine.errors import ItemTooLargeError, SchemaError, ValidationError
from flotilla.engine.ports import Event
from flotilla.engine.records import (
    HistoryEntry,
    Instance,
    LoadBalancerKind,
    LoadBalancerRef,
    Revision,
    RolloutPolicy,
    RolloutState,
    RolloutStatus,
    SealedBlob,
    SealedEnvironment,
    Service,
)

# Schema 2 added the scheduler's rollout state and the service history. Schema-1 items
# read with their defaults; a schema-1 flotilla refuses schema-2 items instead of
# writing the whole item back without them.
SERVICE_SCHEMA = 2
REVISION_SCHEMA = 1
INSTANCE_SCHEMA = 1
DEPLOY_SCHEMA = 1
EVENT_SCHEMA = 1

Item = dict[str, Any]
T = TypeVar("T")

# DynamoDB refuses items over 400 KB; we check before writing so the error names the record.
MAX_ITEM_BYTES = 400 * 1024


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_epoch_ms(moment)


def _time(value: Any) -> datetime | None:
    return None if value is None else from_epoch_ms(int(value))


def _check_schema(item: Mapping[str, Any], kind: str, supported: int) -> None:
    schema = item.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise SchemaError(f"stored {kind} item has no schema number: {_describe(item)}")
    if schema > supported:
        raise SchemaError(
            f"stored {kind} item {_describe(item)} has schema {schema}, newer than this "
            f"flotilla understands ({supported}); upgrade flotilla to read it"
        )


def _describe(item: Mapping[str, Any]) -> str:
    for key in ("id", "name"):
        if isinstance(item.get(key), str):
            return repr(item[key])
    return "(no id)"


def _binary(value: object) -> bytes:
    """A stored binary field; `bytes(number)` would allocate that many bytes instead."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"expected binary data, found {type(value).__name__}")
    return bytes(value)


def _read(kind: str, item: Mapping[str, Any], build: Callable[[], T]) -> T:
    """Build a record, turning a missing or mistyped field into a clear SchemaError."""
    try:
        return build()
    # OverflowError and OSError: a timestamp out of datetime's range.
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, OSError) as exc:
        raise SchemaError(
            f"stored {kind} item {_describe(item)} is malformed ({type(exc).__name__}: {exc}); "
            "it was probably written by another version of flotilla"
        ) from exc


# --- services ------------------------------------------------------------------------


def service_to_item(service: Service) -> Item:
    balancer = service.load_balancer
    return {
        "schema": SERVICE_SCHEMA,
        "name": service.name,
        "load_balancer": None
        if balancer is None
        else {"kind": balancer.kind.value, "name": balancer.name},
        "drain_timeout_seconds": service.drain_timeout_seconds,
        "health_timeout_seconds": service.health_timeout_seconds,
        "settle_seconds": service.settle_seconds,
        "rollout": {
            "max_in_flight": service.rollout.max_in_flight,
            "max_failures": service.rollout.max_failures,
            "auto_revert": service.rollout.auto_revert,
        },
        "weights": dict(service.weights),
        "paused": service.paused,
        "version": service.version,
        "created_ms": _ms(service.created_at),
        "updated_ms": _ms(service.updated_at),
        "rollout_state": _rollout_state_to_item(service.rollout_state),
        "history": [
            {"at_ms": _ms(e.at), "kind": e.kind, "reason": e.reason, "weights": dict(e.weights)}
            for e in service.history
        ],
    }


def _rollout_state_to_item(state: RolloutState) -> Item:
    return {
        "weights": dict(state.weights),
        "status": state.status.value,
        "started_ms": _ms(state.started_at),
        "watch_since_ms": _ms(state.watch_since),
        "failures": dict(state.failures),
        "reason": state.reason,
        "previous_weights": None
        if state.previous_weights is None
        else dict(state.previous_weights),
        "fence_lock": state.fence_lock,
        "fence": state.fence,
    }


def _weights(value: Mapping[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in value.items()}


def _rollout_state_from_item(item: Mapping[str, Any] | None) -> RolloutState:
    if item is None:  # a schema-1 item: no rollout seen yet
        return RolloutState()
    previous = item.get("previous_weights")
    return RolloutState(
        weights=_weights(item["weights"]),
        status=RolloutStatus(item["status"]),
        started_at=_time(item.get("started_ms")),
        watch_since=_time(item.get("watch_since_ms")),
        failures=_weights(item.get("failures") or {}),
        reason=_optional_str(item.get("reason")),
        previous_weights=None if previous is None else _weights(previous),
        fence_lock=_optional_str(item.get("fence_lock")),
        fence=int(item.get("fence", 0)),
    )


def _history_entry_from_item(item: Mapping[str, Any]) -> HistoryEntry:
    at = _time(item["at_ms"])
    if at is None:
        raise ValueError("history at_ms is empty")
    return HistoryEntry(
        at=at, kind=str(item["kind"]), reason=str(item["reason"]), weights=_weights(item["weights"])
    )


def service_from_item(item: Mapping[str, Any]) -> Service:
    _check_schema(item, "service", SERVICE_SCHEMA)

    def build() -> Service:
        balancer = item.get("load_balancer")
        rollout = item["rollout"]
        return Service(
            name=str(item["name"]),
            load_balancer=None
            if balancer is None
            else LoadBalancerRef(LoadBalancerKind(balancer["kind"]), str(balancer["name"])),
            drain_timeout_seconds=int(item["drain_timeout_seconds"]),
            health_timeout_seconds=int(item["health_timeout_seconds"]),
            settle_seconds=int(item["settle_seconds"]),
            rollout=RolloutPolicy(
                max_in_flight=str(rollout["max_in_flight"]),
                max_failures=int(rollout["max_failures"]),
                auto_revert=bool(rollout["auto_revert"]),
            ),
            weights={str(k): int(v) for k, v in item["weights"].items()},
            paused=bool(item["paused"]),
            version=int(item["version"]),
            created_at=_time(item.get("created_ms")),
            updated_at=_time(item.get("updated_ms")),
            rollout_state=_rollout_state_from_item(item.get("rollout_state")),
            history=tuple(_history_entry_from_item(e) for e in item.get("history") or ()),
        )

    return _read("service", item, build)


# --- revisions -----------------------------------------------------------------------


def revision_to_item(revision: Revision) -> Item:
    env = revision.environment
    return {
        "schema": REVISION_SCHEMA,
        "service": revision.service,
        "id": revision.id,
        "label": revision.label,
        "units": dict(revision.units),
        "environment": None
        if env is None
        else {
            "key_id": env.key_id,
            "encrypted_data_key": env.encrypted_data_key,
            "blobs": {
                unit: {"nonce": blob.nonce, "ciphertext": blob.ciphertext}
                for unit, blob in env.blobs.items()
            },
            "variable_names": {unit: list(names) for unit, names in env.variable_names.items()},
        },
        "created_ms": _ms(revision.created_at),
    }


def describe_revision(revision: Revision) -> str:
    """A log-safe summary: ids, unit names and variable NAMES, never values."""
    names = {} if revision.environment is None else revision.environment.variable_names
    return (
        f"revision {revision.id[:12]} of {revision.service}: units {sorted(revision.units)}, "
        f"variables {names}"
    )


def revision_from_item(item: Mapping[str, Any]) -> Revision:
    _check_schema(item, "revision", REVISION_SCHEMA)

    def build() -> Revision:
        env = item.get("environment")
        created = _time(item["created_ms"])
        if created is None:
            raise ValueError("created_ms is empty")
        return Revision(
            service=str(item["service"]),
            id=str(item["id"]),
            label=str(item["label"]),
            units={str(k): str(v) for k, v in item["units"].items()},
            environment=None
            if env is None
            else SealedEnvironment(
                key_id=str(env["key_id"]),
                encrypted_data_key=_binary(env["encrypted_data_key"]),
                blobs={
                    str(unit): SealedBlob(_binary(blob["nonce"]), _binary(blob["ciphertext"]))
                    for unit, blob in env["blobs"].items()
                },
                variable_names={
                    str(unit): tuple(str(n) for n in names)
                    for unit, names in env["variable_names"].items()
                },
            ),
            created_at=created,
        )

    return _read("revision", item, build)


# --- instances -----------------------------------------------------------------------


def instance_to_item(instance: Instance, *, expires_at: datetime) -> Item:
    return {
        "schema": INSTANCE_SCHEMA,
        "id": instance.id,
        "service": instance.service,
        "agent_version": instance.agent_version,
        "registered_ms": _ms(instance.registered_at),
        "heartbeat_ms": _ms(instance.heartbeat_at),
        "expires_at_epoch": int(expires_at.timestamp()),
        "assigned_revision": instance.assigned_revision,
        "assignment_version": instance.assignment_version,
        "current_revision": instance.current_revision,
    }


def instance_from_item(item: Mapping[str, Any]) -> Instance:
    _check_schema(item, "instance", INSTANCE_SCHEMA)

    def build() -> Instance:
        registered = _time(item["registered_ms"])
        heartbeat = _time(item["heartbeat_ms"])
        if registered is None or heartbeat is None:
            raise ValueError("registered_ms or heartbeat_ms is empty")
        return Instance(
            id=str(item["id"]),
            service=str(item["service"]),
            agent_version=str(item["agent_version"]),
            registered_at=registered,
            heartbeat_at=heartbeat,
            assigned_revision=_optional_str(item.get("assigned_revision")),
            assignment_version=int(item.get("assignment_version", 0)),
            current_revision=_optional_str(item.get("current_revision")),
        )

    return _read("instance", item, build)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


# --- deploys -------------------------------------------------------------------------


def deploy_to_item(checkpoint: DeployCheckpoint) -> Item:
    lease = checkpoint.lease
    return {
        "schema": DEPLOY_SCHEMA,
        "id": checkpoint.id,
        "service": checkpoint.service,
        "instance_id": checkpoint.instance_id,
        "from_revision": checkpoint.from_revision,
        "to_revision": checkpoint.to_revision,
        "state": checkpoint.state,
        "machine_version": checkpoint.machine_version,
        "version": checkpoint.version,
        "created_ms": _ms(checkpoint.created_at),
        "updated_ms": _ms(checkpoint.updated_at),
        "deadlines_ms": {name: _ms(at) for name, at in checkpoint.deadlines.items()},
        "attempts": dict(checkpoint.attempts),
        "lease": None
        if lease is None
        else {"name": lease.name, "slot": lease.slot, "owner": lease.owner, "token": lease.token},
        "trace_parent": checkpoint.trace_parent,
        "last_span_id": checkpoint.last_span_id,
        "outcome": None if checkpoint.outcome is None else checkpoint.outcome.value,
        "error": checkpoint.error,
        "rollback_error": checkpoint.rollback_error,
        "history": [_transition_to_item(t) for t in checkpoint.history],
    }


def _transition_to_item(transition: Transition) -> Item:
    return {
        "state": transition.state,
        "started_ms": _ms(transition.started_at),
        "ended_ms": _ms(transition.ended_at),
        "attempt": transition.attempt,
        "error": transition.error,
        "skipped": transition.skipped,
        "resumed": transition.resumed,
        "span_id": transition.span_id,
    }


def _transition_from_item(item: Mapping[str, Any]) -> Transition:
    started = _time(item["started_ms"])
    if started is None:
        raise ValueError("transition started_ms is empty")
    return Transition(
        state=str(item["state"]),
        started_at=started,
        ended_at=_time(item.get("ended_ms")),
        attempt=int(item["attempt"]),
        error=_optional_str(item.get("error")),
        skipped=bool(item.get("skipped", False)),
        resumed=bool(item.get("resumed", False)),
        span_id=_optional_str(item.get("span_id")),
    )


def deploy_from_item(item: Mapping[str, Any]) -> DeployCheckpoint:
    _check_schema(item, "deploy", DEPLOY_SCHEMA)

    def build() -> DeployCheckpoint:
        lease = item.get("lease")
        outcome = item.get("outcome")
        created = _time(item["created_ms"])
        updated = _time(item["updated_ms"])
        if created is None or updated is None:
            raise ValueError("created_ms or updated_ms is empty")
        deadlines: dict[str, datetime] = {}
        for name, value in item["deadlines_ms"].items():
            moment = _time(value)
            if moment is not None:
                deadlines[str(name)] = moment
        return DeployCheckpoint(
            id=str(item["id"]),
            service=str(item["service"]),
            instance_id=str(item["instance_id"]),
            from_revision=_optional_str(item.get("from_revision")),
            to_revision=str(item["to_revision"]),
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
            trace_parent=_optional_str(item.get("trace_parent")),
            last_span_id=_optional_str(item.get("last_span_id")),
            outcome=None if outcome is None else Outcome(outcome),
            error=_optional_str(item.get("error")),
            rollback_error=_optional_str(item.get("rollback_error")),
            history=tuple(_transition_from_item(t) for t in item["history"]),
        )

    return _read("deploy", item, build)


# --- events --------------------------------------------------------------------------

# SQS accepts message bodies up to 256 KB; events are wake-ups and stay far smaller.
MAX_EVENT_BYTES = 64 * 1024


def event_to_json(event: Event) -> str:
    """An event as a message body: JSON with a schema number; `detail` must be JSON."""
    body = {
        "schema": EVENT_SCHEMA,
        "kind": event.kind,
        "service": event.service,
        "detail": dict(event.detail),
    }
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"event {event.kind!r} of {event.service!r} has a detail that is not JSON ({exc})"
        ) from exc
    if len(text.encode("utf-8")) > MAX_EVENT_BYTES:
        raise ValidationError(
            f"event {event.kind!r} of {event.service!r} is over {MAX_EVENT_BYTES // 1024} KB; "
            "events are wake-ups: carry ids, not data"
        )
    return text


def event_from_json(text: str, receipt: str | None) -> Event:
    """A received message body as an event; `SchemaError` if it is not one we can read."""
    try:
        item = json.loads(text)
    except ValueError as exc:
        raise SchemaError(f"message is not a JSON event ({exc})") from exc
    if not isinstance(item, dict):
        raise SchemaError("message is not a JSON event object")
    _check_schema(item, "event", EVENT_SCHEMA)

    def build() -> Event:
        detail = item.get("detail") or {}
        if not isinstance(detail, dict):
            raise TypeError("detail is not an object")
        kind, service = item["kind"], item["service"]
        if not isinstance(kind, str) or not isinstance(service, str):
            raise TypeError("kind and service must be strings")
        return Event(kind=kind, service=service, detail=detail, receipt=receipt)

    return _read("event", item, build)


# --- size ----------------------------------------------------------------------------


def item_size(value: Any) -> int:
    """DynamoDB's size of an attribute value in bytes (its documented rules, rounded up).

    Strings and binaries count their bytes, numbers about one byte per two digits plus
    one, maps and lists three bytes of overhead plus one per element, names their bytes.
    """
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, int | float):
        return len(str(abs(value))) // 2 + 2
    if isinstance(value, Mapping):
        return 3 + sum(len(str(k).encode()) + item_size(v) + 1 for k, v in value.items())
    if isinstance(value, list | tuple):
        return 3 + sum(item_size(v) + 1 for v in value)
    raise TypeError(f"cannot size a {type(value).__name__}")


def check_item_size(item: Item, what: str) -> None:
    """Refuse an item DynamoDB would refuse, naming the record and its size."""
    size = item_size(item)
    if size > MAX_ITEM_BYTES:
        raise ItemTooLargeError(
            f"{what} is {size / 1024:.0f} KB stored, over DynamoDB's 400 KB item limit; "
            "make its unit files or environment smaller (large files belong in an image or "
            "an artifact store, not in the revision)"
        )
