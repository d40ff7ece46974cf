"""Rollouts in waves: the rules of a `WavePlan`, apart from the regions it runs in.

A plan moves one region at a time. A wave starts when the wave before it completed and
the plan's bake time has passed since; it records the region's weights first (what a
stop restores), then stores its own in the region, then waits for that region's
scheduler to complete the rollout. A region whose rollout fails stops the plan: later
waves never start, and the regions done are set back to their weights from before or
kept, as the failure action says. A region that cannot be reached holds the plan, with
the reason, until it answers again. The CLI runs the plan (`cli.waves`); these functions
decide each step, so the rules are in one place and tested without any region.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from flotilla.engine.errors import ValidationError
from flotilla.engine.records import FailureAction, Wave, WavePlan, WaveStatus


def new_plan(
    previous: WavePlan | None,
    targets: Mapping[str, Mapping[str, int]],
    *,
    bake_seconds: int,
    failure_action: FailureAction,
    by: str,
    now: datetime,
    stop_all: bool = False,
) -> WavePlan:
    """A plan over `targets` (region -> the revision ids and weights it gets, in wave
    order); refused while `previous` is still under way."""
    if previous is not None and not previous.finished:
        raise ValidationError(
            f"a rollout in waves is under way already ({describe(previous)}); follow it "
            "with `flotilla rollout waves SERVICE`, or stop it with `--stop` first"
        )
    if len(targets) < 2:
        raise ValidationError("--waves needs two regions or more: name them in order, A,B")
    return WavePlan(
        number=1 if previous is None else previous.number + 1,
        waves=tuple(Wave(region, dict(weights)) for region, weights in targets.items()),
        bake_seconds=bake_seconds,
        failure_action=failure_action,
        status=WaveStatus.ROLLING,
        started_at=now,
        by=by,
        stop_all=stop_all,
    )


def starts_at(plan: WavePlan, index: int) -> datetime | None:
    """When wave `index` may start: once the wave before it completed and baked; None
    while that one has not completed (the first wave starts at once)."""
    if index == 0:
        return plan.started_at
    done = plan.waves[index - 1].completed_at
    return None if done is None else done + timedelta(seconds=plan.bake_seconds)


def _wave(plan: WavePlan, index: int, **changes: object) -> WavePlan:
    waves = list(plan.waves)
    waves[index] = replace(waves[index], **changes)  # type: ignore[arg-type]
    return replace(plan, waves=tuple(waves))


def before_recorded(plan: WavePlan, index: int, weights: Mapping[str, int]) -> WavePlan:
    """The region's weights, read before the wave stores its own (kept if recorded).
    A plan that ended meanwhile (an operator's stop) is left as it is: no wave starts."""
    if plan.finished or plan.waves[index].before is not None:
        return plan
    return _wave(plan, index, before=dict(weights))


def applied(plan: WavePlan, index: int, at: datetime) -> WavePlan:
    if plan.waves[index].applied_at is not None:
        return plan
    return going_on(_wave(plan, index, applied_at=at))


def completed(plan: WavePlan, index: int, at: datetime) -> WavePlan:
    """Wave `index`'s region completed its rollout; the last one completes the plan (not
    one stopped meanwhile)."""
    if plan.finished or plan.waves[index].completed_at is not None:
        return plan
    done = going_on(_wave(plan, index, completed_at=at))
    if done.current is None:
        return replace(done, status=WaveStatus.COMPLETE, reason=None)
    return done


def held(plan: WavePlan, reason: str) -> WavePlan:
    """A region did not answer: nothing moves until it does."""
    if plan.finished:
        return plan
    return replace(plan, status=WaveStatus.HELD, reason=reason)


def going_on(plan: WavePlan) -> WavePlan:
    """Every region needed answered again: a held plan rolls on."""
    if plan.status is WaveStatus.HELD:
        return replace(plan, status=WaveStatus.ROLLING, reason=None)
    return plan


def stopped(plan: WavePlan, reason: str, *, by_operator: bool = False) -> WavePlan:
    """The plan ends here; later waves never start. Kept as it is if it ended before.
    An operator's stop keeps what every region runs (its failure action becomes hold):
    nothing failed, so nothing is set back."""
    if plan.finished:
        return plan
    action = FailureAction.HOLD if by_operator else plan.failure_action
    return replace(plan, status=WaveStatus.STOPPED, reason=reason, failure_action=action)


def to_undo(plan: WavePlan) -> list[int]:
    """The waves a stopped plan sets back to their weights from before (failure action
    `revert`): those whose weights were stored, except the one whose region failed (its
    own scheduler applies its failure action) and those undone already."""
    if plan.status is not WaveStatus.STOPPED or plan.failure_action is not FailureAction.REVERT:
        return []
    return [
        index
        for index, wave in enumerate(plan.waves)
        if wave.completed_at is not None and wave.before is not None and not wave.undone
    ]


def undone(plan: WavePlan, index: int) -> WavePlan:
    return _wave(plan, index, undone=True)


def restoring(wave: Wave) -> list[tuple[str, int]]:
    """The weights that set `wave`'s region back to before it: every revision it or the
    wave weighted, by id, at its weight from before (0 if it had none)."""
    before = wave.before or {}
    return [(revision, before.get(revision, 0)) for revision in sorted({*before, *wave.weights})]


def describe(plan: WavePlan) -> str:
    """`wave 2 of 3 (us-east-1), rolling`, `complete`, `stopped: ...`."""
    index = plan.current
    if plan.status is WaveStatus.COMPLETE or index is None:
        return f"complete in {', '.join(w.region for w in plan.waves)}"
    where = f"wave {index + 1} of {len(plan.waves)} ({plan.waves[index].region})"
    reason = f": {plan.reason}" if plan.reason else ""
    return f"{where}, {plan.status.value}{reason}"
