"""Read-modify-write without lost updates: re-apply a change until it lands on the latest record.

The store refuses a write based on a stale version (`ConflictError` carrying the
current record); these helpers re-apply the caller's change to that current record.
The change must be a pure function of the record, so applying it again is correct.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from flotilla.engine.errors import ConflictError
from flotilla.engine.ports import StateStore
from flotilla.engine.records import Service
from flotilla.engine.validation import service as validate_service

MAX_ATTEMPTS = 50


def modify_service(store: StateStore, name: str, change: Callable[[Service], Service]) -> Service:
    """Apply `change` to the stored service and store the result, retrying on conflicts.

    Validation happens before every write, so a change that makes the service invalid
    raises `ValidationError` and stores nothing.
    """
    current = store.get_service(name)
    for _ in range(MAX_ATTEMPTS):
        updated = validate_service(change(current))
        if updated == current:
            return current  # nothing to write
        try:
            return store.update_service(updated)
        except ConflictError as conflict:
            if not isinstance(conflict.current, Service):
                raise
            current = conflict.current
    raise ConflictError(
        f"service {name!r} kept changing under {MAX_ATTEMPTS} attempts to update it; "
        "try again in a moment",
        current=current,
    )


def set_weights(store: StateStore, name: str, weights: dict[str, int]) -> Service:
    """Replace the weights named in `weights`, keeping the others, in one atomic change."""
    return modify_service(store, name, lambda service: _with_weights(service, weights))


def _with_weights(service: Service, weights: dict[str, int]) -> Service:
    return replace(service, weights={**service.weights, **weights})
