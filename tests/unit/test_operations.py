"""The operator's operations (engine.operations) on the memory adapters: set weights, pause,
resume and revert change the service conditionally, say who did it in the history, wake the
scheduler only after a stored change, and store nothing when refused."""

from __future__ import annotations

import dataclasses
import os
from datetime import timedelta

import pytest

from flotilla.adapters.memory_events import MemoryEventQueue
from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.adapters.secrets import LocalSecretBox
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import FlotillaError, NotFoundError, TransientError, ValidationError
from flotilla.engine.operations.names import find_revision, find_service, label_of, weights_text
from flotilla.engine.operations.rules import NoRevert, bounded_history, revert_target
from flotilla.engine.operations.steering import Operations
from flotilla.engine.ports import Event
from flotilla.engine.records import (
    HISTORY_LIMIT,
    HistoryEntry,
    Revision,
    RolloutState,
    RolloutStatus,
    Service,
)
from flotilla.engine.revisions import build_revision
from flotilla.engine.validation import MAX_WEIGHT


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStateStore(self.clock)
        self.events = MemoryEventQueue(self.clock)
        self.secrets = LocalSecretBox(os.urandom(32))
        self.operations = Operations(self.store, self.events, self.clock)
        self.store.create_service(Service("api"))

    def revision(self, label: str) -> Revision:
        revision = build_revision(
            "api",
            label,
            {"web.service": f"[Service]\nExecStart=/usr/bin/web {label}\n"},
            {},
            self.secrets,
            self.clock.now(),
        )
        return self.store.put_revision(revision)

    def service(self) -> Service:
        return self.store.get_service("api")

    def woken(self) -> list[str]:
        """The kinds of the events sent since the last look."""
        found = self.events.receive(wait=timedelta(0))
        for event in found:
            self.events.ack(event)
        return [e.kind for e in found if e.service == "api"]

    def with_last_good(self, weights: dict[str, int], last_good: dict[str, int] | None) -> None:
        """What the scheduler leaves after rollouts: `weights` now, `last_good` known."""
        current = self.service()
        state = RolloutState(
            weights=weights, status=RolloutStatus.COMPLETE, previous_weights=last_good
        )
        self.store.update_service(
            dataclasses.replace(current, weights=weights, rollout_state=state)
        )


class UnreachableQueue:
    def send(self, event: Event) -> None:
        raise TransientError("sending an event: cannot reach SQS; will retry")


@pytest.fixture
def world() -> World:
    return World()


# --- set weights ----------------------------------------------------------------------


def test_weights_by_label_id_and_prefix_in_one_change(world: World) -> None:
    v1, v2, v3 = world.revision("v1"), world.revision("v2"), world.revision("v3")
    before = world.service()
    change = world.operations.set_weights(before, [("v1", 90), (v2.id[:8], 10), (v3.id, 0)])
    assert change.changed
    assert change.woken
    assert change.service.weights == {v1.id: 90, v2.id: 10, v3.id: 0}
    assert change.service.version == before.version + 1
    assert change.labels == {v1.id: "v1", v2.id: "v2", v3.id: "v3"}
    assert world.service() == change.service
    assert world.woken() == ["service_changed"]


def test_weights_not_named_are_kept_and_the_same_weights_change_nothing(world: World) -> None:
    v1, v2 = world.revision("v1"), world.revision("v2")
    world.operations.set_weights(world.service(), [("v1", 100)])
    world.woken()
    change = world.operations.set_weights(world.service(), [("v2", 5)])
    assert change.service.weights == {v1.id: 100, v2.id: 5}
    world.woken()
    again = world.operations.set_weights(world.service(), [("v2", 5)])
    assert (again.changed, again.woken) == (False, False)
    assert again.service.version == change.service.version
    assert world.woken() == []  # nothing changed, nobody woken


@pytest.mark.parametrize(
    ("named", "message"),
    [
        ([("v1", 50), ("nosuch", 50)], "has no revision labelled 'nosuch'"),
        ([("v1", 50), ("v1", 50)], "is named twice"),
        ([("v1", MAX_WEIGHT + 1)], "invalid weight"),  # the record is validated before writing
    ],
)
def test_a_refused_weight_change_stores_and_sends_nothing(
    world: World, named: list[tuple[str, int]], message: str
) -> None:
    world.revision("v1")
    before = world.service()
    with pytest.raises(ValidationError, match=message):
        world.operations.set_weights(before, named)
    assert world.service() == before
    assert world.woken() == []


def test_a_name_that_is_a_label_and_an_id_prefix_is_ambiguous(world: World) -> None:
    v1 = world.revision("v1")
    world.revision(v1.id[:4])  # labelled like the start of v1's id
    with pytest.raises(ValidationError, match="names more than one revision"):
        find_revision(world.store.list_revisions("api"), v1.id[:4], "api")


# --- pause and resume -----------------------------------------------------------------


def test_pause_and_resume_say_who_and_why_and_wake_the_scheduler(world: World) -> None:
    paused = world.operations.pause(world.service(), by="alice", reason="canary looks slow")
    assert (paused.changed, paused.woken, paused.service.paused) == (True, True, True)
    entry = paused.service.history[-1]
    assert (entry.kind, entry.reason) == ("paused", "paused by alice: canary looks slow")
    assert paused.note == entry.reason
    assert entry.at.microsecond % 1000 == 0  # items keep whole milliseconds
    assert world.woken() == ["service_changed"]

    again = world.operations.pause(world.service(), by="bob")
    assert (again.changed, again.woken, again.note) == (False, False, None)
    assert again.service.version == paused.service.version
    assert world.woken() == []

    resumed = world.operations.resume(world.service(), by="bob")
    assert resumed.service.paused is False
    assert resumed.service.history[-1].reason == "resumed by bob"
    assert world.woken() == ["service_changed"]


def test_a_stale_record_is_brought_up_to_date_not_overwritten(world: World) -> None:
    v1 = world.revision("v1")
    stale = world.service()
    world.operations.set_weights(world.service(), [("v1", 100)])  # another operator, meanwhile
    paused = world.operations.pause(stale, by="alice")
    assert paused.service.paused is True
    assert paused.service.weights == {v1.id: 100}  # the other change stands


def test_a_change_stands_when_the_scheduler_cannot_be_woken(world: World) -> None:
    operations = Operations(world.store, UnreachableQueue(), world.clock)  # type: ignore[arg-type]
    change = operations.pause(world.service(), by="alice")
    assert change.changed is True
    assert change.woken is False
    assert "cannot reach SQS" in (change.unwoken or "")
    assert world.service().paused is True


# --- revert ---------------------------------------------------------------------------


def test_revert_restores_the_last_good_weights(world: World) -> None:
    v1, v2 = world.revision("v1"), world.revision("v2")
    world.with_last_good({v1.id: 25, v2.id: 75}, last_good={v1.id: 100})
    world.operations.pause(world.service(), by="alice")
    world.woken()
    change = world.operations.revert(world.service(), by="bob", reason="v2 is slow")
    assert change.service.weights == {v1.id: 100}
    assert change.before == {v1.id: 25, v2.id: 75}
    entry = change.service.history[-1]
    assert entry.kind == "reverted"
    assert entry.reason == (
        "reverted by bob: restored the last good weights v1=100 (were v1=25, v2=75): v2 is slow"
    )
    assert entry.weights == {v1.id: 100}
    assert change.service.paused is True  # a revert does not resume
    assert change.service.rollout_state == world.service().rollout_state  # the scheduler's
    assert world.woken() == ["service_changed"]


@pytest.mark.parametrize(
    ("last_good", "message"),
    [
        (None, "nothing to revert: no rollout of api has completed without a failure yet"),
        ({"V1": 100}, r"nothing to revert: api's weights already are its last good weights \(v1"),
    ],
)
def test_nothing_to_revert_stores_and_sends_nothing(
    world: World, last_good: dict[str, int] | None, message: str
) -> None:
    v1 = world.revision("v1")
    world.with_last_good({v1.id: 100}, None if last_good is None else {v1.id: 100})
    before = world.service()
    with pytest.raises(FlotillaError, match=message):
        world.operations.revert(before, by="alice")
    assert world.service() == before
    assert world.woken() == []


# --- the rules and names both sides use -----------------------------------------------


def test_the_revert_target() -> None:
    good = {"a" * 64: 100}
    state = RolloutState(previous_weights=good)
    assert revert_target(RolloutState(), good) is NoRevert.UNKNOWN
    assert revert_target(state, dict(good)) is NoRevert.ALREADY
    assert revert_target(state, {"b" * 64: 100}) == good
    # The scheduler's wording when it stops a rollout it cannot revert.
    assert NoRevert.UNKNOWN.value == "no rollout has completed without failures yet"
    assert NoRevert.ALREADY.value == "these are the last good weights"


def test_the_history_keeps_its_last_entries() -> None:
    entries = [HistoryEntry(FakeClock().now(), "paused", str(n), {}) for n in range(150)]
    kept = bounded_history(entries[:120], entries[120:])
    assert len(kept) == HISTORY_LIMIT
    assert kept[-1].reason == "149"


def test_a_missing_service_says_where_it_was_looked_for(world: World) -> None:
    with pytest.raises(NotFoundError, match="'nosuch' does not exist in environment 'prod'"):
        find_service(world.store, "nosuch", "prod")
    with pytest.raises(ValidationError, match="invalid service name"):
        find_service(world.store, "Bad_Name", "prod")
    assert find_service(world.store, "api", "prod").name == "api"


def test_revisions_are_shown_by_label_or_id_prefix() -> None:
    labels = {"a" * 64: "v1"}
    assert label_of(labels, "a" * 64) == "v1"
    assert label_of(labels, "b" * 64) == "b" * 12
    assert label_of(labels, None) is None
    assert weights_text({"b" * 64: 10, "a" * 64: 90}, labels) == "bbbbbbbbbbbb=10, v1=90"
    assert weights_text({}, labels) == "-"
