"""Apportion a service's live instances among its revisions by weight.

`assign` is the pure function the scheduler calls on every pass: given which revision each
live instance runs now and the desired weights, it returns the target revision of every
instance. Two schedulers given the same inputs compute the same answer, whatever order
their dicts iterate in, so no coordination is needed to agree on a target.

Counts per revision are a largest-remainder (Hamilton) apportionment of the instance count:

- each revision first gets the floor of its exact quota `total * weight / sum(weights)`;
- the seats left over go one each to the revisions ordered by
  1. larger remainder first,
  2. then, among equal remainders, a revision that holds more instances now than its floor
     before one that does not (the seat then keeps an instance where it is),
  3. then larger weight,
  4. then revision id ascending (plain `str` ordering).

Only equal remainders at the cut leave Hamilton's method a choice (weights 3:1 over 10
instances: quotas 7.5 and 2.5, one seat left), and rule 2 makes the choice that moves the
fewest instances: with the current split 7/3, nothing moves. Among the revisions tied at
the cut, a seat given to one that holds more than its floor keeps one of its instances in
place, and a seat given to any other keeps none, so handing the seats to the former first
reaches the minimum over every outcome the method allows. Rules 3 and 4 only order what is
left, so the answer stays a function of the inputs. What each revision holds is a count,
independent of dict order; `assign` passes it. Once its targets are reached, the revisions
that got the extra seats are exactly those holding more than their floor, so the next pass
gives the seats to them again.

Arithmetic is exact integer arithmetic: every quota shares the denominator
`sum(weights)`, so remainders are compared as integer numerators, never as floats.

Given those counts, as few instances as possible change revision: an instance keeps its
revision while that revision is under its count, and when a revision has more instances
than its count the smallest instance ids keep it. Instances that must move (over-count,
on a revision that is no longer weighted, or on none yet) are taken in instance-id order
and fill the revisions that are short, in revision-id order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from flotilla.engine.errors import ValidationError

__all__ = ["assign", "hamilton_counts", "moves"]


def hamilton_counts(
    total: int, weights: Mapping[str, int], held: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Split `total` seats among the revisions in `weights` by largest remainder.

    `held` is how many instances each revision has now (as `assign` counts its `current`);
    among equal remainders, the leftover seats go first to the revisions holding more than
    their floor (the module's rule 2). Without it, no revision holds any.

    Returns a count for every revision in `weights` (zero-weight revisions get 0), keyed in
    revision-id order. The counts sum to `total` when any weight is positive; when all weights
    are zero, or there are none, every count is 0.
    """
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValidationError(
            f"instance total must be a non-negative int, got {total!r}; "
            "pass the number of live instances"
        )
    _check_weights(weights)
    holding = {} if held is None else held
    _check_held(holding)
    revisions = sorted(weights)
    weight_sum = sum(weights[revision] for revision in revisions)
    if weight_sum == 0 or total == 0:
        return dict.fromkeys(revisions, 0)

    counts: dict[str, int] = {}
    remainders: dict[str, int] = {}
    for revision in revisions:
        # quota = total * weight / weight_sum = floor + remainder / weight_sum, exactly.
        counts[revision], remainders[revision] = divmod(total * weights[revision], weight_sum)
    leftover = total - sum(counts.values())
    # leftover < number of revisions with a positive remainder (each remainder is < 1 seat and
    # they sum to leftover seats), so a zero-weight revision can never receive one.
    floors = dict(counts)

    def claim(revision: str) -> tuple[int, bool, int, str]:
        keeps_an_instance = holding.get(revision, 0) > floors[revision]
        return (-remainders[revision], not keeps_an_instance, -weights[revision], revision)

    for revision in sorted(revisions, key=claim)[:leftover]:
        counts[revision] += 1
    return counts


def assign(current: Mapping[str, str | None], weights: Mapping[str, int]) -> dict[str, str | None]:
    """Return the target revision of every live instance, moving as few as possible.

    `current` maps every live instance id to the revision it runs now (or None);
    `weights` maps revision ids to non-negative int weights. Revisions missing from
    `weights` lose all their instances. When no weight is positive every instance maps to
    None: the service is meant to run nothing. The result is keyed in instance-id order.
    """
    _check_current(current)
    instance_ids = sorted(current)
    held = Counter(revision for revision in current.values() if revision is not None)
    counts = hamilton_counts(len(instance_ids), weights, held)

    kept = dict.fromkeys(counts, 0)
    target: dict[str, str | None] = {}
    to_place: list[str] = []
    # Walking instances in id order makes "keep the smallest ids" fall out of a single pass.
    for instance_id in instance_ids:
        revision = current[instance_id]
        if revision is not None and kept.get(revision, 0) < counts.get(revision, 0):
            kept[revision] += 1
            target[instance_id] = revision
        else:
            target[instance_id] = None
            to_place.append(instance_id)

    # When a weight is positive the counts sum to the instance total, so the shortfalls add
    # up to exactly len(to_place); when none is, there is no shortfall and all stay None.
    position = 0
    for revision in sorted(counts):
        for _ in range(counts[revision] - kept[revision]):
            target[to_place[position]] = revision
            position += 1
    return target


def moves(before: Mapping[str, str | None], after: Mapping[str, str | None]) -> int:
    """Count the instances of `after` whose revision differs from `before`.

    An instance absent from `before` counts as having had None (a new instance that stays
    unassigned is no move); instances only in `before` are gone and are not counted.
    """
    return sum(1 for instance_id, revision in after.items() if before.get(instance_id) != revision)


def _check_weights(weights: Mapping[str, int]) -> None:
    for revision, weight in weights.items():
        if not isinstance(revision, str):
            raise ValidationError(f"revision ids must be strings, got {revision!r} in weights")
        # bool is an int subclass, but True as a weight is almost certainly a mistake.
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise ValidationError(
                f"weight of revision {revision!r} must be an int, got {weight!r} "
                f"({type(weight).__name__}); use whole numbers such as 90 and 10"
            )
        if weight < 0:
            raise ValidationError(
                f"weight of revision {revision!r} is {weight}; weights must be 0 or more"
            )


def _check_held(held: Mapping[str, int]) -> None:
    for revision, count in held.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValidationError(
                f"instances held by revision {revision!r} must be a non-negative int, got {count!r}"
            )


def _check_current(current: Mapping[str, str | None]) -> None:
    for instance_id, revision in current.items():
        if not isinstance(instance_id, str):
            raise ValidationError(f"instance ids must be strings, got {instance_id!r}")
        if revision is not None and not isinstance(revision, str):
            raise ValidationError(
                f"revision of instance {instance_id!r} must be a string or None, got {revision!r}"
            )
