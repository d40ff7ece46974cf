"""Read-modify-write without lost updates: re-apply a change until it lands on the latest record.

The store refuses a write based on a stale version (`ConflictError` carrying the
current record); these helpers re-apply the caller's change to that current record.
The change must be a pure function of the record, so applying it again is correct.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from flotilla.engine.errors import ConflictError
from flotilla.engine.ports import StateStore
from flotilla.engine.records import Service
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
    it) and store the result, retrying on conflicts; validated before every write."""
    return apply_until_stored(
        current if current is not None else store.get_service(name),
        lambda record: validate_service(change(record)),
        store.update_service,
        f"service {name!r}",
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
