"""Properties of the scheduler's apportionment: Hamilton counts, minimal moves, determinism."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flotilla.engine.errors import ValidationError
from flotilla.scheduler.apportion import assign, hamilton_counts, moves

REVISIONS = ["r-a", "r-b", "r-c", "r-d", "r-e"]
# Revisions that instances may run but that no weight names: deleted or unknown.
STRAY_REVISIONS = ["r-gone", "r-old"]

FAST = settings(max_examples=200, deadline=None)

# Small weights on purpose: ties between remainders and between weights are then common.
weights_strategy = st.dictionaries(
    st.sampled_from(REVISIONS), st.integers(min_value=0, max_value=6), max_size=len(REVISIONS)
)


@st.composite
def fleets(draw: st.DrawFn, max_instances: int = 40) -> dict[str, str | None]:
    """Instance id -> current revision, including None and revisions no weight names."""
    instance_ids = draw(
        st.lists(st.text("abcxyz0123", min_size=1, max_size=4), max_size=max_instances, unique=True)
    )
    revision = st.none() | st.sampled_from(REVISIONS + STRAY_REVISIONS)
    return {instance_id: draw(revision) for instance_id in instance_ids}


def claim_key(
    revision: str, total: int, weights: dict[str, int], held: dict[str, int] | None = None
) -> tuple[Fraction, bool, int, str]:
    """The documented order for leftover seats: larger remainder, then holding more than
    the floor, then larger weight, then smaller id."""
    quota = Fraction(total * weights[revision], sum(weights.values()))
    floor = quota.numerator // quota.denominator
    holds_more = (held or {}).get(revision, 0) > floor
    return (-(quota - floor), not holds_more, -weights[revision], revision)


def held_by(current: dict[str, str | None]) -> dict[str, int]:
    """How many instances each revision has now."""
    return dict(Counter(revision for revision in current.values() if revision is not None))


def hamilton_outcomes(total: int, weights: dict[str, int]) -> list[dict[str, int]]:
    """Every apportionment Hamilton's method allows: each revision its floor, and the seats
    left over to the largest remainders, handed out every possible way among the revisions
    whose remainders tie at the cut. Computed with fractions, apart from the module."""
    weight_sum = sum(weights.values())
    if weight_sum == 0 or total == 0:
        return [dict.fromkeys(weights, 0)]
    quotas = {
        revision: Fraction(total * weight, weight_sum) for revision, weight in weights.items()
    }
    floors = {revision: quota.numerator // quota.denominator for revision, quota in quotas.items()}
    remainders = {revision: quotas[revision] - floors[revision] for revision in quotas}
    leftover = total - sum(floors.values())
    if leftover == 0:
        return [floors]
    cut = sorted(remainders.values(), reverse=True)[leftover - 1]
    above = [revision for revision, remainder in remainders.items() if remainder > cut]
    tied = sorted(revision for revision, remainder in remainders.items() if remainder == cut)
    outcomes = []
    for chosen in itertools.combinations(tied, leftover - len(above)):
        outcomes.append(
            {revision: floors[revision] + (revision in (*above, *chosen)) for revision in floors}
        )
    return outcomes


def every_assignment(
    instance_ids: list[str], counts: dict[str, int]
) -> Iterator[dict[str, str | None]]:
    """Every way to give the instances revisions so that each revision gets its count."""
    if not instance_ids:
        yield {}
        return
    for revision, count in counts.items():
        if count:
            for rest in every_assignment(instance_ids[1:], {**counts, revision: count - 1}):
                yield {instance_ids[0]: revision, **rest}


def brute_force_min_moves(current: dict[str, str | None], counts: dict[str, int]) -> int:
    """Try every assignment of instances with exactly `counts`; return the fewest moves."""
    instance_ids = sorted(current)
    if sum(counts.values()) == 0:
        return moves(current, dict.fromkeys(instance_ids))
    return min(moves(current, choice) for choice in every_assignment(instance_ids, counts))


# --- hamilton_counts -------------------------------------------------------------------------


@FAST
@given(st.integers(min_value=0, max_value=200), weights_strategy)
def test_counts_are_floor_or_ceiling_of_the_exact_quota(
    total: int, weights: dict[str, int]
) -> None:
    counts = hamilton_counts(total, weights)
    assert set(counts) == set(weights)
    weight_sum = sum(weights.values())
    if weight_sum == 0:
        assert all(count == 0 for count in counts.values())
        return
    assert sum(counts.values()) == total
    for revision, count in counts.items():
        quota = Fraction(total * weights[revision], weight_sum)
        assert count in {
            quota.numerator // quota.denominator,
            -(-quota.numerator // quota.denominator),
        }
        if weights[revision] == 0:
            assert count == 0


@FAST
@given(st.integers(min_value=0, max_value=200), weights_strategy)
def test_leftover_seats_go_by_the_documented_tie_break(total: int, weights: dict[str, int]) -> None:
    counts = hamilton_counts(total, weights)
    if sum(weights.values()) == 0:
        return
    rounded_up: list[str] = []
    rounded_down: list[str] = []
    for revision, count in counts.items():
        quota = Fraction(total * weights[revision], sum(weights.values()))
        if quota.denominator == 1:
            continue  # exact quota: neither rounded up nor down, no claim on a leftover seat
        (rounded_up if count > quota else rounded_down).append(revision)
    for winner in rounded_up:
        for loser in rounded_down:
            assert claim_key(winner, total, weights) < claim_key(loser, total, weights)


@FAST
@given(
    st.integers(min_value=0, max_value=200),
    weights_strategy,
    st.dictionaries(st.sampled_from(REVISIONS + STRAY_REVISIONS), st.integers(0, 60)),
)
def test_counts_are_always_a_valid_hamilton_outcome_that_follows_the_documented_order(
    total: int, weights: dict[str, int], held: dict[str, int]
) -> None:
    counts = hamilton_counts(total, weights, held)
    assert counts in hamilton_outcomes(total, weights)
    if sum(weights.values()) == 0:
        return
    quotas = {r: Fraction(total * weight, sum(weights.values())) for r, weight in weights.items()}
    rounded_up = [revision for revision in weights if counts[revision] > quotas[revision]]
    rounded_down = [revision for revision in weights if counts[revision] < quotas[revision]]
    for winner in rounded_up:
        for loser in rounded_down:
            assert claim_key(winner, total, weights, held) < claim_key(loser, total, weights, held)


def test_equal_remainders_go_first_to_the_revision_that_holds_the_extra_instance() -> None:
    # Weights 3:1 over 10 instances, quotas 7.5 and 2.5: split 7/3 now, so "light" holds
    # more than its floor of 2 and keeps its third instance; nothing has to move.
    assert hamilton_counts(10, {"heavy": 3, "light": 1}, {"heavy": 7, "light": 3}) == {
        "heavy": 7,
        "light": 3,
    }
    # Split 8/2, or nothing held: "light" holds no more than its floor; larger weight wins.
    assert hamilton_counts(10, {"heavy": 3, "light": 1}, {"heavy": 8, "light": 2}) == {
        "heavy": 8,
        "light": 2,
    }
    assert hamilton_counts(10, {"heavy": 3, "light": 1}) == {"heavy": 8, "light": 2}
    # Quotas 4/3 each, one seat left: "b" and "c" both hold more than their floor of 1,
    # so the order without holders decides between them (equal weights: the smaller id).
    assert hamilton_counts(4, {"a": 1, "b": 1, "c": 1}, {"b": 2, "c": 2}) == {
        "a": 1,
        "b": 2,
        "c": 1,
    }
    # Holding decides only among equal remainders: 0.75 beats 0.25 whatever is held.
    assert hamilton_counts(1, {"heavy": 3, "light": 1}, {"light": 1}) == {"heavy": 1, "light": 0}


def test_held_counts_are_checked() -> None:
    with pytest.raises(ValidationError, match="non-negative int"):
        hamilton_counts(2, {"a": 1}, {"a": -1})
    with pytest.raises(ValidationError, match="non-negative int"):
        hamilton_counts(2, {"a": 1}, {"a": True})


def test_ninety_ten_over_ten_instances_is_nine_and_one() -> None:
    assert hamilton_counts(10, {"new": 10, "old": 90}) == {"new": 1, "old": 9}


def test_equal_remainders_go_to_the_larger_weight() -> None:
    # Quotas 0.5 and 1.5: equal remainders, so the heavier revision takes the leftover seat.
    assert hamilton_counts(2, {"light": 1, "heavy": 3}) == {"heavy": 2, "light": 0}


def test_equal_remainders_and_weights_go_to_the_smaller_revision_id() -> None:
    assert hamilton_counts(4, {"c": 1, "b": 1, "a": 1}) == {"a": 2, "b": 1, "c": 1}
    assert hamilton_counts(2, dict.fromkeys(REVISIONS, 7)) == {
        "r-a": 1,
        "r-b": 1,
        "r-c": 0,
        "r-d": 0,
        "r-e": 0,
    }


def test_no_positive_weight_gives_no_seats() -> None:
    assert hamilton_counts(5, {}) == {}
    assert hamilton_counts(5, {"a": 0, "b": 0}) == {"a": 0, "b": 0}


# --- assign ----------------------------------------------------------------------------------


@FAST
@given(fleets(), weights_strategy)
def test_assigned_counts_are_the_hamilton_counts(
    current: dict[str, str | None], weights: dict[str, int]
) -> None:
    target = assign(current, weights)
    assert set(target) == set(current)
    counts = hamilton_counts(len(current), weights, held_by(current))
    assigned = Counter(revision for revision in target.values() if revision is not None)
    assert assigned == Counter({revision: count for revision, count in counts.items() if count})
    if sum(weights.values()) == 0:
        assert all(revision is None for revision in target.values())
    else:
        assert None not in target.values()


@settings(max_examples=300, deadline=None)
@given(fleets(max_instances=6), st.dictionaries(st.sampled_from(REVISIONS[:4]), st.integers(0, 4)))
def test_moves_are_the_brute_force_minimum(
    current: dict[str, str | None], weights: dict[str, int]
) -> None:
    target = assign(current, weights)
    counts = hamilton_counts(len(current), weights, held_by(current))
    assert moves(current, target) == brute_force_min_moves(current, counts)


SEVEN_THREE = {f"i-{number:02}": "heavy" if number < 7 else "light" for number in range(10)}


@settings(max_examples=300, deadline=None)
@given(fleets(max_instances=7), st.dictionaries(st.sampled_from(REVISIONS[:4]), st.integers(0, 4)))
@example(SEVEN_THREE, {"heavy": 3, "light": 1})
@example({"i-1": "r-b", "i-2": "r-a", "i-3": "r-c"}, {"r-a": 1, "r-b": 1, "r-c": 1, "r-d": 1})
@example({"i-1": "r-b", "i-2": None}, {"r-a": 2, "r-b": 2})
def test_moves_are_the_minimum_over_every_valid_hamilton_outcome(
    current: dict[str, str | None], weights: dict[str, int]
) -> None:
    """Of every apportionment Hamilton's method allows (each way of handing the leftover
    seats among revisions tied at the cut), none moves fewer instances than `assign`."""
    target = assign(current, weights)
    outcomes = hamilton_outcomes(len(current), weights)
    assigned = Counter(revision for revision in target.values() if revision is not None)
    assert {revision: assigned[revision] for revision in weights} in outcomes
    fewest = min(brute_force_min_moves(current, counts) for counts in outcomes)
    assert moves(current, target) == fewest


def test_a_seven_three_split_under_weights_three_to_one_moves_nothing() -> None:
    assert assign(SEVEN_THREE, {"heavy": 3, "light": 1}) == SEVEN_THREE


@FAST
@given(fleets(), weights_strategy)
def test_every_instance_still_under_its_count_keeps_its_revision(
    current: dict[str, str | None], weights: dict[str, int]
) -> None:
    target = assign(current, weights)
    counts = hamilton_counts(len(current), weights, held_by(current))
    on_revision = Counter(current.values())
    for instance_id, revision in current.items():
        if revision in counts and on_revision[revision] <= counts[revision]:
            assert target[instance_id] == revision


@FAST
@given(fleets(), weights_strategy, st.data())
def test_result_does_not_depend_on_dict_order(
    current: dict[str, str | None], weights: dict[str, int], data: st.DataObject
) -> None:
    shuffled_current = dict(data.draw(st.permutations(list(current.items()))))
    shuffled_weights = dict(data.draw(st.permutations(list(weights.items()))))
    expected = assign(current, weights)
    actual = assign(shuffled_current, shuffled_weights)
    assert actual == expected
    assert list(actual.items()) == list(expected.items())


@FAST
@given(fleets(), weights_strategy)
def test_assign_is_idempotent(current: dict[str, str | None], weights: dict[str, int]) -> None:
    target = assign(current, weights)
    assert assign(target, weights) == target
    assert moves(target, assign(target, weights)) == 0


def test_ninety_ten_over_ten_instances() -> None:
    current = {f"i-{number:02}": "old" for number in range(10)}
    target = assign(current, {"old": 90, "new": 10})
    assert Counter(target.values()) == {"old": 9, "new": 1}
    # The largest id moves: the smallest ids keep an over-count revision.
    assert target["i-09"] == "new"
    assert moves(current, target) == 1


def test_all_zero_or_no_weights_unassign_every_instance() -> None:
    current = {"i-1": "a", "i-2": None, "i-3": "gone"}
    assert assign(current, {"a": 0, "b": 0}) == dict.fromkeys(current)
    assert assign(current, {}) == dict.fromkeys(current)


def test_tie_break_decides_which_revision_gets_the_extra_instance() -> None:
    # Three instances over two equal weights: quotas 1.5 each, "a" < "b" takes the extra one.
    target = assign({"i-1": None, "i-2": None, "i-3": None}, {"b": 1, "a": 1})
    assert target == {"i-1": "a", "i-2": "a", "i-3": "b"}


def test_unknown_revisions_lose_their_instances_and_new_instances_fill_short_revisions() -> None:
    current = {"i-1": "deleted", "i-2": "a", "i-3": None, "i-4": "a", "i-5": "a"}
    target = assign(current, {"a": 1, "b": 1, "c": 1, "z": 0})
    # Counts: a=2, b=2, c=1 (leftover seats by revision id). i-5 is a's largest id, so it
    # moves; the movers i-1, i-3, i-5 fill b, b, c in instance-id order.
    assert target == {"i-1": "b", "i-2": "a", "i-3": "b", "i-4": "a", "i-5": "c"}
    assert moves(current, target) == 3


def test_more_revisions_than_instances() -> None:
    target = assign({"i-1": "r-e", "i-2": None}, dict.fromkeys(REVISIONS, 1))
    # Only two of the five equal quotas get a seat: r-e, which has an instance already,
    # keeps it, and the new instance goes to r-a (the smallest id).
    assert target == {"i-1": "r-e", "i-2": "r-a"}


def test_single_instance_and_empty_fleet() -> None:
    # Quotas 0.5 each: the one seat goes to the revision that has the instance already.
    assert assign({"i-1": "b"}, {"a": 1, "b": 1}) == {"i-1": "b"}
    assert assign({"i-1": None}, {"a": 1, "b": 1}) == {"i-1": "a"}
    assert assign({"i-1": "b"}, {"a": 1, "b": 2}) == {"i-1": "b"}
    assert assign({}, {"a": 1}) == {}


def test_moves_counts_new_instances_only_when_they_get_a_revision() -> None:
    assert moves({"i-1": "a"}, {"i-1": "a", "i-2": None}) == 0
    assert moves({"i-1": "a"}, {"i-1": "b", "i-2": "a"}) == 2
    assert moves({"i-1": "a", "i-gone": "a"}, {"i-1": "a"}) == 0


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"a": -1}, "weights must be 0 or more"),
        ({"a": True}, "must be an int"),
        ({"a": 1.5}, "must be an int"),
        ({"a": "3"}, "must be an int"),
        ({7: 1}, "revision ids must be strings"),
    ],
)
def test_bad_weights_are_rejected(weights: dict[Any, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        assign({"i-1": None}, weights)
    with pytest.raises(ValidationError, match=message):
        hamilton_counts(1, weights)


def test_bad_fleet_is_rejected() -> None:
    with pytest.raises(ValidationError, match="instance ids must be strings"):
        assign({1: "a"}, {"a": 1})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="must be a string or None"):
        assign({"i-1": 3}, {"a": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize("total", [-1, True, 2.0])
def test_bad_total_is_rejected(total: Any) -> None:
    with pytest.raises(ValidationError, match="non-negative int"):
        hamilton_counts(total, {"a": 1})
