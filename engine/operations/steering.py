"""Operator operations on a service: set weights, pause, resume, revert, undo, promote.

Each changes the service record through `engine.updates.modify_service` (conditional on
the version it was based on, re-applied to the latest record on a conflict, validated
before every write), so a mistake stores nothing and two operators never overwrite each
other. Pause, resume, revert, undo and promote add a line to the service history saying
who did it and why; new weights need none, the scheduler records the rollout they start.
Weights that run nothing are refused unless asked for (`rules.check_running`). A
promotion is stored as the service's next `Promotion`, which the scheduler applies once.

A change that was stored is followed by a `service_changed` event. The event is only a
wake-up: if it cannot be sent the change stands all the same, the scheduler's timed pass
finds it, and the returned `Change` says why the scheduler was not woken. The rollout
state is the scheduler's alone; nothing here writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from flotilla.engine import updates
from flotilla.engine.clock import Clock
from flotilla.engine.errors import FlotillaError, ValidationError
from flotilla.engine.operations.names import ID_CHARS, find_revision, weights_text
from flotilla.engine.operations.rules import (
    NoRevert,
    bounded_history,
    check_running,
    revert_target,
    undo_target,
)
from flotilla.engine.ports import Event, EventQueue, StateStore
from flotilla.engine.records import HistoryEntry, Promotion, Revision, RolloutStatus, Service

CHANGED = "service_changed"  # the event that wakes the scheduler for one service
UNDONE = "undone"  # the history kind of an undo
PROMOTED = "promoted"  # the history kind of a promotion


@dataclass(frozen=True)
class Change:
    """What an operation did to a service."""

    service: Service  # as stored afterwards (as given, when nothing changed)
    changed: bool  # whether anything was written
    before: Mapping[str, int]  # the weights before the operation
    labels: Mapping[str, str]  # revision id -> label, of the service's revisions
    note: str | None = None  # the history line written, if one was
    unwoken: str | None = None  # why the scheduler was not woken after a stored change

    @property
    def woken(self) -> bool:
        return self.changed and self.unwoken is None


def wake_scheduler(events: EventQueue, service: str) -> str | None:
    """Send `service_changed` about `service`: None once sent, else why it was not."""
    try:
        events.send(Event(CHANGED, service))
    except FlotillaError as unsent:
        return unsent.message
    return None


class Operations:
    """The operator's operations on one environment's services."""

    def __init__(self, store: StateStore, events: EventQueue, clock: Clock) -> None:
        self.store = store
        self.events = events
        self.clock = clock

    def set_weights(
        self, service: Service, named: Sequence[tuple[str, int]], *, stop_all: bool = False
    ) -> Change:
        """Give each named revision (label, id or id prefix) its weight in one atomic change;
        revisions not named keep theirs. Every name is resolved before anything is written;
        weights that would run nothing need `stop_all`."""
        revisions = self.store.list_revisions(service.name)
        chosen = named_weights(revisions, named, service.name)

        def change(current: Service) -> Service:
            weights = {**current.weights, **chosen}
            if weights != current.weights:
                check_running(weights, stop_all=stop_all, service=current.name)
            return replace(current, weights=weights)

        stored = updates.modify_service(self.store, service.name, change, current=service)
        labels = {r.id: r.label for r in revisions}
        return self._woken(
            Change(stored, stored.version != service.version, dict(service.weights), labels)
        )

    def pause(self, service: Service, *, by: str, reason: str | None = None) -> Change:
        """The scheduler assigns nothing in `service` until it is resumed; deploys already
        running finish. Pausing a paused service changes nothing."""
        return self._set_paused(service, True, by, reason)

    def resume(self, service: Service, *, by: str, reason: str | None = None) -> Change:
        """The scheduler carries on with `service`'s rollout where it was paused."""
        return self._set_paused(service, False, by, reason)

    def revert(self, service: Service, *, by: str, reason: str | None = None) -> Change:
        """Restore the last good weights (`rules.revert_target`); refused, storing nothing,
        when there are none or they are in force already."""
        labels = self._labels(service.name)
        at = self._now()
        notes: list[str] = []

        def change(current: Service) -> Service:
            target = revert_target(current.rollout_state, current.weights)
            if isinstance(target, NoRevert):
                raise FlotillaError(_nothing_to_revert(target, current, labels))
            why = (
                f"reverted by {by}: restored the last good weights "
                f"{weights_text(target, labels)} (were {weights_text(current.weights, labels)})"
            ) + (f": {reason}" if reason else "")
            notes[:] = [why]
            entry = HistoryEntry(at, "reverted", why, dict(target))
            return _with_entry(replace(current, weights=dict(target)), entry)

        before = dict(service.weights)
        stored = updates.modify_service(self.store, service.name, change, current=service)
        return self._woken(Change(stored, True, before, labels, notes[0]))

    def undo(
        self,
        service: Service,
        *,
        by: str,
        steps: int = 1,
        to: str | None = None,
        reason: str | None = None,
        stop_all: bool = False,
    ) -> Change:
        """Go back to earlier weights of the service's history (`rules.undo_target`): the
        setting `steps` back, or the latest in which the revision named `to` had weight.
        Refused, storing nothing, when the history holds no such weights."""
        if steps < 1:
            raise ValidationError(f"invalid --steps {steps}: give a whole number, 1 or more")
        revisions = self.store.list_revisions(service.name)
        labels = {r.id: r.label for r in revisions}
        wanted = None if to is None else find_revision(revisions, to, service.name)
        at = self._now()
        notes: list[str] = []

        def change(current: Service) -> Service:
            target = undo_target(
                current.history,
                current.weights,
                steps=steps,
                to=None if wanted is None else wanted.id,
            )
            if isinstance(target, str):
                how = (
                    f" to {wanted.label}"
                    if wanted is not None
                    else (f" {steps} steps back" if steps > 1 else "")
                )
                raise FlotillaError(
                    f"cannot undo {current.name}'s weights{how}: {target}; see "
                    f"`flotilla history {current.name}`, or set weights with `flotilla weights`"
                )
            check_running(target, stop_all=stop_all, service=current.name)
            why = (
                f"undone by {by}: back to {weights_text(target, labels)} "
                f"(were {weights_text(current.weights, labels)})"
            ) + (f": {reason}" if reason else "")
            notes[:] = [why]
            entry = HistoryEntry(at, UNDONE, why, dict(target))
            return _with_entry(replace(current, weights=dict(target)), entry)

        before = dict(service.weights)
        stored = updates.modify_service(self.store, service.name, change, current=service)
        return self._woken(Change(stored, True, before, labels, notes[0]))

    def promote(self, service: Service, *, by: str, full: bool = False) -> Change:
        """Skip the current wait of `service`'s rollout (its gate, bake or pause), or with
        `full` every wait to its end: store the next `Service.promotion`, which the
        scheduler applies once. Refused, storing nothing, unless a rollout is rolling in
        a service that is not paused (`promotion_refusal`)."""
        labels = self._labels(service.name)
        at = self._now()
        notes: list[str] = []

        def change(current: Service) -> Service:
            refusal = promotion_refusal(current)
            if refusal is not None:  # the operator's mistake, not a failure: exit 2
                raise ValidationError(refusal)
            number = max(
                current.promotion.number if current.promotion is not None else 0,
                current.rollout_state.promoted,
            )
            what = "every wait to the end of the rollout" if full else "the current wait"
            why = f"promoted by {by}: skip {what}"
            notes[:] = [why]
            entry = HistoryEntry(at, PROMOTED, why, dict(current.weights))
            promoted = replace(current, promotion=Promotion(number + 1, full, at, by))
            return _with_entry(promoted, entry)

        stored = updates.modify_service(self.store, service.name, change, current=service)
        return self._woken(Change(stored, True, dict(service.weights), labels, notes[0]))

    # --- shared -----------------------------------------------------------------------

    def _set_paused(self, service: Service, paused: bool, by: str, reason: str | None) -> Change:
        kind = "paused" if paused else "resumed"
        why = f"{kind} by {by}" + (f": {reason}" if reason else "")
        labels = self._labels(service.name)
        at = self._now()
        applied = [False]

        def change(current: Service) -> Service:
            applied[0] = current.paused != paused
            if not applied[0]:
                return current
            entry = HistoryEntry(at, kind, why, dict(current.weights))
            return _with_entry(replace(current, paused=paused), entry)

        stored = updates.modify_service(self.store, service.name, change, current=service)
        note = why if applied[0] else None
        return self._woken(Change(stored, applied[0], dict(service.weights), labels, note))

    def _woken(self, change: Change) -> Change:
        if not change.changed:
            return change
        return replace(change, unwoken=wake_scheduler(self.events, change.service.name))

    def _labels(self, service: str) -> dict[str, str]:
        return {r.id: r.label for r in self.store.list_revisions(service)}

    def _now(self) -> datetime:
        now = self.clock.now()
        return now.replace(microsecond=now.microsecond // 1000 * 1000)  # items keep whole ms


def named_weights(
    revisions: Sequence[Revision], named: Sequence[tuple[str, int]], service: str
) -> dict[str, int]:
    """Revision id -> weight for (name, weight) pairs, each name resolved by the naming
    rule (`names.find_revision`); a revision named twice is refused."""
    chosen: dict[str, int] = {}
    for name, weight in named:
        found = find_revision(revisions, name, service)
        if found.id in chosen:
            raise ValidationError(f"revision {found.id[:ID_CHARS]} ({found.label}) is named twice")
        chosen[found.id] = weight
    return chosen


def promotion_refusal(service: Service) -> str | None:
    """Why `service`'s rollout cannot be promoted now (None: it can), with what to do."""
    name = service.name
    state = service.rollout_state
    if state.status is RolloutStatus.HELD:
        return (
            f"cannot promote {name}: its rollout is held ({state.reason or 'no reason recorded'})"
            f"; `flotilla rollout resume {name}` carries it on, `flotilla rollout revert {name}` "
            "goes back"
        )
    if service.paused:
        return (
            f"cannot promote {name}: it is paused and nothing moves; "
            f"`flotilla rollout resume {name}` first, then promote if it still waits"
        )
    if state.weights != service.weights:
        return (
            f"cannot promote {name}: the scheduler has not taken up its new weights yet; "
            f"promote once `flotilla rollout status {name}` shows them rolling"
        )
    if state.status is not RolloutStatus.ROLLING:
        return (
            f"cannot promote {name}: no rollout is rolling (its last one is "
            f"{state.status.value}); start one with `flotilla weights {name} REVISION=WEIGHT...`"
        )
    return None


def _with_entry(service: Service, entry: HistoryEntry) -> Service:
    return replace(service, history=bounded_history(service.history, [entry]))


def _nothing_to_revert(why: NoRevert, service: Service, labels: Mapping[str, str]) -> str:
    if why is NoRevert.UNKNOWN:
        return (
            f"nothing to revert: no rollout of {service.name} has completed without a failure "
            "yet, so no last good weights are known; go back to earlier weights with "
            f"`flotilla rollout undo {service.name}`, or set weights with `flotilla weights`"
        )
    return (
        f"nothing to revert: {service.name}'s weights already are its last good weights "
        f"({weights_text(service.weights, labels)}); to go back to the weights before them, "
        f"use `flotilla rollout undo {service.name}`"
    )
