"""Rules the operator's revert and the scheduler's auto-revert share, pure.

A revert restores a service's *last good weights*: those of its last rollout that
completed without a single failed deploy (`RolloutState.previous_weights`, written by the
scheduler). There is nothing to revert to when no rollout has completed cleanly yet, or
when the weights already are the last good ones. `flotilla rollout revert` refuses then;
the scheduler stops the rollout instead and says which of the two held it back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

from flotilla.engine.records import HISTORY_LIMIT, HistoryEntry, RolloutState


class NoRevert(StrEnum):
    """Why a service has no weights to revert to; the value is the scheduler's wording."""

    UNKNOWN = "no rollout has completed without failures yet"
    ALREADY = "these are the last good weights"


def revert_target(state: RolloutState, weights: Mapping[str, int]) -> dict[str, int] | NoRevert:
    """The weights a revert restores from `weights`, or why there are none."""
    previous = state.previous_weights
    if previous is None:
        return NoRevert.UNKNOWN
    if dict(previous) == dict(weights):
        return NoRevert.ALREADY
    return dict(previous)


def bounded_history(
    kept: Sequence[HistoryEntry], added: Sequence[HistoryEntry]
) -> tuple[HistoryEntry, ...]:
    """The history with `added` appended, only its last `HISTORY_LIMIT` entries kept."""
    return (*kept, *added)[-HISTORY_LIMIT:]
