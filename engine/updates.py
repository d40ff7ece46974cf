"""Read-modify-write without lost updates: re-apply a change until it lands on the latest record.

The store refuses a write based on a stale version (`ConflictError` carrying the
current record); these helpers re-apply the caller's change to that current record.
The change must be a pure function of the record, so applying it again is correct.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from flotilla.engine.errors import BeingDeletedError, ConflictError
from flotilla.engine.operations.rules import bounded_history
from flotilla.engine.ports import StateStore
from flotilla.engine.records import HistoryEntry, Service
from flotilla.engine.validation import service as validate_service

MAX_ATTEMPTS = 50
R = TypeVar("R")


def apply_until_stored(
    current: R, change: Callable[[R], R], write: Callable[[R], R], what: str
) -> R:
    """Store `change(current)` with `write` (conditional on the record's version); on a
    conflict, apply the change again to the record the conflict carries. A change that
    changes nothing writes nothing. `change` validates, so an invalid result stores nothing.
    """
    for _ in range(MAX_ATTEMPTS):
        updated = change(current)
        if updated == current:
            return current  # nothing to write
        try:
            return write(updated)
        except ConflictError as conflict:
            if not isinstance(conflict.current, type(current)):
                raise
            current = conflict.current
    raise ConflictError(
        f"{what} kept changing under {MAX_ATTEMPTS} attempts to update it; try again in a moment",
        current=current,
    )


def modify_service(
    store: StateStore,
    name: str,
    change: Callable[[Service], Service],
    *,
    current: Service | None = None,
) -> Service:
    """Apply `change` to the service (as stored, or `current` when the caller just read
    it) and store the result, retrying on conflicts; validated before every write.
    A service being deleted is refused (`BeingDeletedError`): the one place that says so."""
    return apply_until_stored(
        current if current is not None else store.get_service(name),
        lambda record: validate_service(change(changeable(record))),
        store.update_service,
        f"service {name!r}",
    )


def changeable(service: Service) -> Service:
    """The service itself, unless it is being deleted: then nothing may change it."""
    if service.deleting_since is not None:
        raise BeingDeletedError(
            f"service {service.name!r} is being deleted (since "
            f"{service.deleting_since.isoformat(timespec='seconds')}): it cannot be changed; "
            "wait until `flotilla service show` no longer finds it, then create it again"
        )
    return service


def deletion_mark(service: Service, at: datetime) -> Service:
    """`service` marked as being deleted since `at`, with a `deleting` history entry
    (published as `service_deleting`); a service marked already keeps its first mark."""
    if service.deleting:
        return service
    entry = HistoryEntry(
        at, "deleting", "service delete: its instances are being unassigned", service.weights
    )
    history = bounded_history(service.history, [entry])
    return replace(service, deleting_since=at, history=history)


def mark_deleting(store: StateStore, name: str, at: datetime, *, current: Service) -> Service:
    """Store the deletion mark (`deletion_mark`), re-applied on conflicts like any change."""
    return apply_until_stored(
        current, lambda record: deletion_mark(record, at), store.update_service, f"service {name!r}"
    )


def set_weights(
    store: StateStore, name: str, weights: dict[str, int], *, current: Service | None = None
) -> Service:
    """Replace the weights named in `weights`, keeping the others, in one atomic change."""
    return modify_service(
        store, name, lambda service: _with_weights(service, weights), current=current
    )


def _with_weights(service: Service, weights: dict[str, int]) -> Service:
    return replace(service, weights={**service.weights, **weights})
