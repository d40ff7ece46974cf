"""The rules of a rollout in waves (`engine.operations.waves`), without any region."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flotilla.engine.errors import ValidationError
from flotilla.engine.operations import waves as rules
from flotilla.engine.records import FailureAction, WavePlan, WaveStatus

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
V1, V2 = "1" * 64, "2" * 64


def plan(action: FailureAction = FailureAction.REVERT, bake: int = 600) -> WavePlan:
    return rules.new_plan(
        None,
        {"a": {V2: 100, V1: 0}, "b": {V2: 100, V1: 0}, "c": {V2: 100, V1: 0}},
        bake_seconds=bake,
        failure_action=action,
        by="ops",
        now=T0,
    )


def through(made: WavePlan, index: int, at: datetime) -> WavePlan:
    """Wave `index` set and completed at `at`."""
    made = rules.before_recorded(made, index, {V1: 100})
    made = rules.applied(made, index, at)
    return rules.completed(made, index, at)


def test_a_wave_starts_only_after_the_one_before_completed_and_baked() -> None:
    made = plan()
    assert rules.starts_at(made, 0) == T0
    assert rules.starts_at(made, 1) is None  # a has not completed
    made = through(made, 0, T0 + timedelta(minutes=5))
    assert made.current == 1
    assert rules.starts_at(made, 1) == T0 + timedelta(minutes=15)


def test_the_last_wave_completing_completes_the_plan() -> None:
    made = plan()
    for index in range(3):
        made = through(made, index, T0)
    assert made.status is WaveStatus.COMPLETE
    assert made.current is None
    assert made.finished


def test_the_weights_from_before_are_kept_as_first_recorded() -> None:
    """A command that died after recording them, and set the weights, must not record the
    new weights as the ones from before when it is run again."""
    made = rules.before_recorded(plan(), 0, {V1: 100})
    again = rules.before_recorded(made, 0, {V2: 100, V1: 0})
    assert again.waves[0].before == {V1: 100}
    assert not again.waves[0].applied


def test_a_hold_ends_when_the_regions_answer_again() -> None:
    made = rules.held(plan(), "region b is unreachable: no connection")
    assert (made.status, made.reason) == (WaveStatus.HELD, "region b is unreachable: no connection")
    made = rules.going_on(made)
    assert (made.status, made.reason) == (WaveStatus.ROLLING, None)


def test_a_failure_sets_back_the_regions_done_under_revert() -> None:
    made = through(plan(FailureAction.REVERT), 0, T0)
    made = rules.applied(rules.before_recorded(made, 1, {V1: 100}), 1, T0)
    made = rules.stopped(made, "b: the rollout stopped")
    assert rules.to_undo(made) == [0]  # b failed: its own scheduler handles it; c never began
    assert rules.restoring(made.waves[0]) == [(V1, 100), (V2, 0)]
    made = rules.undone(made, 0)
    assert rules.to_undo(made) == []


def test_a_failure_keeps_the_regions_done_under_hold() -> None:
    made = through(plan(FailureAction.HOLD), 0, T0)
    assert rules.to_undo(rules.stopped(made, "b: the rollout stopped")) == []


def test_an_operators_stop_keeps_every_region_as_it_is() -> None:
    made = rules.stopped(
        through(plan(FailureAction.REVERT), 0, T0), "stopped by ops", by_operator=True
    )
    assert made.status is WaveStatus.STOPPED
    assert made.failure_action is FailureAction.HOLD
    assert rules.to_undo(made) == []


def test_an_ended_plan_is_not_changed_by_a_late_hold_or_stop() -> None:
    made = rules.stopped(plan(), "first reason")
    assert rules.held(made, "late") == made
    assert rules.stopped(made, "second reason") == made


def test_a_new_plan_is_refused_while_one_is_under_way_and_numbered_after_it() -> None:
    under_way = plan()
    with pytest.raises(ValidationError, match="under way already"):
        rules.new_plan(
            under_way, {"a": {}, "b": {}}, bake_seconds=0,
            failure_action=FailureAction.REVERT, by="ops", now=T0,
        )  # fmt: skip
    ended = rules.stopped(under_way, "why")
    after = rules.new_plan(
        ended, {"a": {}, "b": {}}, bake_seconds=0, failure_action=FailureAction.REVERT,
        by="ops", now=T0,
    )  # fmt: skip
    assert after.number == under_way.number + 1


def test_restoring_a_region_that_ran_nothing_before_gives_every_weight_zero() -> None:
    made = rules.before_recorded(plan(), 0, {})
    assert rules.restoring(made.waves[0]) == [(V1, 0), (V2, 0)]


def test_a_stopped_plan_starts_and_completes_no_wave() -> None:
    """A command that followed the plan while an operator stopped it records nothing more."""
    made = rules.stopped(plan(), "stopped by ops", by_operator=True)
    assert rules.before_recorded(made, 0, {V1: 100}) == made
    assert rules.completed(made, 0, T0) == made
    assert made.status is WaveStatus.STOPPED
