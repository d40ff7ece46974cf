"""The operator's operations (engine.operations) on the memory adapters: set weights, pause,
resume and revert change the service conditionally, say who did it in the history, wake the
scheduler only after a stored change, and store nothing when refused."""

from __future__ import annotations

import dataclasses
import os
import re
from datetime import timedelta

import pytest

from flotilla.adapters.memory_events import MemoryEventQueue
from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.adapters.secrets import LocalSecretBox
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import FlotillaError, NotFoundError, TransientError, ValidationError
from flotilla.engine.operations.names import (
    find_revision,
    find_service,
    label_of,
    new_label,
    weights_text,
    with_labels,
)
from flotilla.engine.operations.rules import (
    NoRevert,
    bounded_history,
    revert_target,
    undo_target,
    weight_settings,
)
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


def _revision(revision_id: str, label: str) -> Revision:
    return Revision("api", revision_id, label, {}, None, FakeClock().now())


def test_an_exact_label_wins_over_an_id_prefix() -> None:
    b = _revision("f" * 64, "b")
    other = _revision("b221" + "0" * 60, "v7")
    revisions = [b, other]
    assert find_revision(revisions, "b", "api") is b  # not "names more than one revision"
    assert find_revision(revisions, "b2", "api") is other  # a longer prefix still names it
    assert find_revision(revisions, other.id.upper(), "api") is other  # a whole id, any case


def test_build_number_labels_always_name_their_own_revision() -> None:
    # Ids starting with digits, as sha256 ids do one time in... often enough.
    revisions = [
        _revision(f"{(n * 7) % 10}{n:x}" + "a" * (62 - len(f"{n:x}")) + "0", str(n))
        for n in range(1, 13)
    ]
    for revision in revisions:
        assert find_revision(revisions, revision.label, "api") is revision


def test_an_id_prefix_of_several_revisions_is_ambiguous_and_says_so() -> None:
    revisions = [_revision("ab" + "0" * 62, "v1"), _revision("ab" + "1" * 62, "v2")]
    with pytest.raises(ValidationError, match="start of the ids of 2 revisions"):
        find_revision(revisions, "ab", "api")
    twins = [_revision("c" * 64, "same"), _revision("d" * 64, "same")]
    with pytest.raises(ValidationError, match="2 revisions of 'api' are labelled 'same'"):
        find_revision(twins, "same", "api")


def test_the_label_rule_at_revision_add() -> None:
    revisions = [_revision("b221" + "0" * 60, "v1")]
    assert new_label(revisions, "b", "api") == "b"  # a prefix of an id: the label wins
    assert new_label(revisions, "b221", "api") == "b221"
    with pytest.raises(ValidationError, match="already has a revision labelled 'v1'"):
        new_label(revisions, "v1", "api")
    with pytest.raises(ValidationError, match="64 hex digits read as a whole revision id"):
        new_label(revisions, "e" * 64, "api")


def test_weights_that_run_nothing_need_stop_all(world: World) -> None:
    v1 = world.revision("v1")
    world.operations.set_weights(world.service(), [("v1", 100)])
    world.woken()
    before = world.service()
    with pytest.raises(ValidationError, match=r"would have weight 0.*add --stop-all"):
        world.operations.set_weights(before, [("v1", 0)])
    assert world.service() == before
    assert world.woken() == []
    with pytest.raises(ValidationError, match="--stop-all is for weights that are all 0"):
        world.operations.set_weights(before, [("v1", 50)], stop_all=True)
    assert world.service() == before
    stopped = world.operations.set_weights(before, [("v1", 0)], stop_all=True)
    assert stopped.service.weights == {v1.id: 0}
    assert world.woken() == ["service_changed"]


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
        (None, "nothing to revert: no rollout of api has completed without a failure yet.*undo"),
        (
            {"V1": 100},
            r"already are its last good weights \(v1=100\); .*`flotilla rollout undo api`",
        ),
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


# --- undo -------------------------------------------------------------------------------


def _rolled_out(world: World, weights: dict[str, int]) -> None:
    """What the scheduler records for a rollout of `weights` that completed cleanly."""
    current = world.service()
    at = world.clock.now()
    entries = (
        HistoryEntry(at, "rollout_started", "weights changed", weights),
        HistoryEntry(at, "rollout_complete", "every live instance runs its assignment", weights),
    )
    state = RolloutState(weights=weights, status=RolloutStatus.COMPLETE, previous_weights=weights)
    world.store.update_service(
        dataclasses.replace(
            current,
            weights=weights,
            rollout_state=state,
            history=bounded_history(current.history, entries),
        )
    )
    world.clock.advance(60)


def test_undo_goes_back_after_a_rollout_that_succeeded(world: World) -> None:
    v1, v2 = world.revision("v1"), world.revision("v2")
    _rolled_out(world, {v1.id: 100})
    _rolled_out(world, {v1.id: 0, v2.id: 100})
    world.woken()
    # revert has nothing to do: the current weights are the last good ones
    with pytest.raises(FlotillaError, match="nothing to revert"):
        world.operations.revert(world.service(), by="alice")
    change = world.operations.undo(world.service(), by="alice", reason="v2 is slow")
    assert change.service.weights == {v1.id: 100, v2.id: 0}
    assert change.before == {v1.id: 0, v2.id: 100}
    entry = change.service.history[-1]
    assert (entry.kind, entry.weights) == ("undone", {v1.id: 100, v2.id: 0})
    assert entry.reason == "undone by alice: back to v1=100, v2=0 (were v1=0, v2=100): v2 is slow"
    assert change.note == entry.reason
    assert world.woken() == ["service_changed"]
    # Undoing the undo goes forward again, as kubectl's rollout undo does.
    again = world.operations.undo(world.service(), by="alice")
    assert again.service.weights == {v1.id: 0, v2.id: 100}


def test_undo_by_steps_and_to_a_revision(world: World) -> None:
    v1, v2, v3 = world.revision("v1"), world.revision("v2"), world.revision("v3")
    _rolled_out(world, {v1.id: 100})
    _rolled_out(world, {v1.id: 75, v2.id: 25})
    _rolled_out(world, {v2.id: 100})
    _rolled_out(world, {v3.id: 100})
    two_back = world.operations.undo(world.service(), by="bob", steps=2)
    assert two_back.service.weights == {v3.id: 0, v1.id: 75, v2.id: 25}
    back_to_v3 = world.operations.undo(world.service(), by="bob", to="v3")
    assert back_to_v3.service.weights == {v1.id: 0, v2.id: 0, v3.id: 100}
    # The newest earlier weights in which v1 had weight: the 75/25 canary (the current
    # weights do not count, however much weight v1 has in them).
    back_to_v1 = world.operations.undo(world.service(), by="bob", to="v1")
    assert back_to_v1.service.weights == {v1.id: 75, v2.id: 25, v3.id: 0}


@pytest.mark.parametrize(
    ("steps", "to", "message"),
    [
        (1, None, "cannot undo api's weights: its history holds no earlier weights"),
        (3, None, "cannot undo api's weights 3 steps back: its history holds 1 earlier "
                  "setting(s) of weights, not 3"),
        (1, "v2", "cannot undo api's weights to v2: no earlier weights in its history gave "
                  "that revision a weight"),
    ],
)  # fmt: skip
def test_nothing_to_undo_stores_and_sends_nothing(
    world: World, steps: int, to: str | None, message: str
) -> None:
    v1, v2 = world.revision("v1"), world.revision("v2")
    if steps != 1 or to is not None:
        _rolled_out(world, {v1.id: 50})
    _rolled_out(world, {v1.id: 100, v2.id: 0})
    before = world.service()
    with pytest.raises(FlotillaError, match=re.escape(message)):
        world.operations.undo(before, by="alice", steps=steps, to=to)
    assert world.service() == before
    assert world.woken() == []


def test_undo_to_weights_that_ran_nothing_needs_stop_all(world: World) -> None:
    v1 = world.revision("v1")
    _rolled_out(world, {v1.id: 0})  # stored by an older Flotilla, before --stop-all
    _rolled_out(world, {v1.id: 100})
    with pytest.raises(ValidationError, match="add --stop-all"):
        world.operations.undo(world.service(), by="alice")
    change = world.operations.undo(world.service(), by="alice", stop_all=True)
    assert change.service.weights == {v1.id: 0}


def test_weight_settings_and_the_undo_target() -> None:
    a, b = "a" * 64, "b" * 64
    at = FakeClock().now()
    history = [
        HistoryEntry(at, "rollout_started", "", {a: 100}),
        HistoryEntry(at, "rollout_complete", "", {a: 100, b: 0}),  # the same setting
        HistoryEntry(at, "paused", "", {a: 100}),
        HistoryEntry(at, "rollout_started", "", {b: 100}),
    ]
    assert weight_settings(history) == [{a: 100}, {b: 100}]
    assert undo_target(history, {b: 100}) == {b: 0, a: 100}
    # A change the scheduler has not taken up yet is undone to the last recorded weights.
    assert undo_target(history, {a: 50, b: 50}) == {a: 0, b: 100}


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


def test_ids_in_a_text_are_shown_as_labels() -> None:
    labels = {"a" * 64: "v1", "b" * 64: "v2"}
    text = "weights changed from {aaaaaaaaaaaa=100} to {bbbbbbbbbbbb=100}; cccccccccccc failed"
    assert with_labels(text, labels) == (
        "weights changed from {v1=100} to {v2=100}; cccccccccccc failed"
    )
    assert with_labels("aaaaaaaaaaaaa is longer", labels) == "aaaaaaaaaaaaa is longer"
