"""Rules of the operator's operations, pure; some shared with the scheduler.

- **Revert** restores a service's *last good weights*: those of its last rollout that
  completed without a single failed deploy (`RolloutState.previous_weights`, written by the
  scheduler). There is nothing to revert to when no rollout has completed cleanly yet, or
  when the weights already are the last good ones. `flotilla rollout revert` refuses then;
  the scheduler (its auto-revert uses `revert_target` too) stops the rollout instead and
  says which of the two held it back.
- **Undo** goes back through the weights the service *had*, whether their rollouts
  succeeded or not, as kubectl's `rollout undo` and Nomad's `job revert` do:
  `weight_settings` reads them off the history (every entry records the weights in force
  after it), `undo_target` picks the one `--steps N` back (1: the weights before the
  current ones) or the latest one under which `--to REVISION` had weight. An undo is
  itself a change of weights, so undoing twice goes back and forth between two settings.
  Only what the bounded history (`HISTORY_LIMIT` entries) still holds can be reached.
- **All-zero weights** run nothing anywhere: refused unless the operator says so with
  `stop_all` (`--stop-all`), and `stop_all` is refused for weights that still run
  something, so the flag can never be given by habit (`check_running`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

from flotilla.engine.errors import ValidationError
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


def runs_nothing(weights: Mapping[str, int]) -> bool:
    """Whether `weights` leave every instance without a revision (all zero, or none)."""
    return not any(weight > 0 for weight in weights.values())


def check_running(weights: Mapping[str, int], *, stop_all: bool, service: str) -> None:
    """Weights that run nothing need `stop_all`; `stop_all` needs weights that run nothing."""
    if runs_nothing(weights) and not stop_all:
        raise ValidationError(
            f"every revision of {service} would have weight 0, so no instance would run "
            "anything; give some revision a weight, or add --stop-all to stop "
            f"{service} everywhere on purpose"
        )
    if stop_all and not runs_nothing(weights):
        raise ValidationError(
            f"--stop-all is for weights that are all 0, but {service} would still run "
            "revisions with weight; leave out --stop-all, or set every weight to 0"
        )


def weight_settings(history: Sequence[HistoryEntry]) -> list[dict[str, int]]:
    """The weights the service had, oldest first, a setting repeated in a row kept once.

    Only the revisions with weight count: `v1=100` and `v1=100, v2=0` are one setting."""
    settings: list[dict[str, int]] = []
    for entry in history:
        weights = _weighted(entry.weights)
        if not settings or settings[-1] != weights:
            settings.append(weights)
    return settings


def undo_target(
    history: Sequence[HistoryEntry],
    weights: Mapping[str, int],
    *,
    steps: int = 1,
    to: str | None = None,
) -> dict[str, int] | str:
    """The weights an undo restores from `weights`, or why there are none (the text is
    the end of the refusal: "... <why>").

    The candidates are the earlier settings, newest first, each differing from the one
    after it and the first differing from `weights`. `steps` counts back through them;
    `to` (a revision id) picks the newest in which it had weight. Revisions that had a
    weight then and have none in that setting get weight 0, so the undo restores exactly
    that setting and nothing of what came after runs on."""
    current = _weighted(weights)
    earlier: list[dict[str, int]] = []
    for setting in reversed(weight_settings(history)):
        latest = earlier[-1] if earlier else current
        if setting != latest:
            earlier.append(setting)
    if not earlier:
        return "its history holds no earlier weights"
    if to is not None:
        chosen = next((s for s in earlier if s.get(to, 0) > 0), None)
        if chosen is None:
            return "no earlier weights in its history gave that revision a weight"
    elif steps > len(earlier):
        return f"its history holds {len(earlier)} earlier setting(s) of weights, not {steps}"
    else:
        chosen = earlier[steps - 1]
    # Revisions weighted now but not in the chosen setting are set to 0 explicitly.
    return {**dict.fromkeys(weights, 0), **chosen}


def _weighted(weights: Mapping[str, int]) -> dict[str, int]:
    return {revision: weight for revision, weight in sorted(weights.items()) if weight > 0}
