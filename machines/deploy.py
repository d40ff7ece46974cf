"""The deploy state machine: states, triggers, guards and the facts derived from them.

Happy path (DESIGN.md):

    pending → locking → deregistering → draining → stopping → starting → registering
            → healthy → unlocked → done

Failure path: `fail` from any working state (locking … healthy) → failed → rolling_back
→ unlocked → done. The outcome is `succeeded`, `rolled_back`, or `failed` when even the
rollback failed; `outcome()` derives it from two facts the checkpoint keeps (see there).

A service without a load balancer still visits deregistering, draining and registering and
leaves each by the explicit `lb_skipped` trigger, so its history shows them as skipped
rather than missing. Guards keep `lb_skipped` for services without a load balancer and
the load-balancer triggers for services with one.

Two more facts make the machine skip steps, each left by the `skipped` trigger with the
reason `skip_reason` gives (the history and the span record it):
- an *unassignment* (the instance is assigned no revision: `to_revision` None) runs the
  same states, but `starting` and `registering` have nothing to do: the instance leaves
  the load balancer, drains, stops and removes its units, and `healthy` checks that none
  is left;
- *traffic kept*: no unit that serves traffic changes (engine/unit_plan.py decides which
  do), so the instance stays in the load balancer: deregistering, draining and
  registering are skipped, and a rollback has nobody to re-register.

Pure: no I/O, no clock. This module is the one authority on the flow: the engine
restores a `DeployMachine` once per run from the checkpoint's stored facts (state,
`failed_in`, whether the rollback failed), performs the current state's step, reports a
`StepResult`, and `advance` fires the trigger it means. The facts the engine acts on
(`working`, `can_fail`, `holds_slot`, `rolling_back`, `rollback_work`, `outcome`) are read
off the machine, never re-derived. Restoring at a stored state fires no `on_enter`
callback (a `transitions` rule), which suits the engine: on resume it performs the current
state's step itself. A trigger the current state does not allow raises `InvalidTransition`;
a checkpoint this definition cannot follow raises `CannotResume` from `DeployMachine.restore`.

Over 400 lines on purpose: one machine per module (CONVENTIONS.md), and its definition,
the facts derived from it and the class that follows it read best together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Final

from transitions import Machine, MachineError

# The definition's version, stored in every checkpoint. Bump it when states or transitions
# change so that a checkpoint written by this definition could not be followed by the new
# one (a state removed or renamed, a step's meaning changed); then list in
# `_RESUMABLE_STATES` which states of the older versions the new definition can still take
# over. Removing a transition that a stored state does not depend on needs no bump.
MACHINE_VERSION: Final[int] = 3


class State(StrEnum):
    """Every state, in order: the happy path, then the two states only a failure visits.
    A `StrEnum`: stored checkpoints hold the plain words, which compare equal."""

    PENDING = "pending"
    LOCKING = "locking"
    DEREGISTERING = "deregistering"
    DRAINING = "draining"
    STOPPING = "stopping"
    STARTING = "starting"
    REGISTERING = "registering"
    HEALTHY = "healthy"
    UNLOCKED = "unlocked"
    DONE = "done"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"

    def __repr__(self) -> str:
        return repr(self.value)  # messages show the stored word: 'draining'


INITIAL_STATE: Final = State.PENDING
ROLLING_BACK_STATE: Final = State.ROLLING_BACK
UNLOCKED_STATE: Final = State.UNLOCKED
DONE_STATE: Final = State.DONE

HAPPY_PATH: Final = tuple(State)[:10]
FAILURE_STATES: Final = (State.FAILED, State.ROLLING_BACK)
STATES: Final = (*HAPPY_PATH, *FAILURE_STATES)
TERMINAL_STATES: Final = (State.DONE,)
# States in which the engine performs a step (and where a crash can leave a deploy).
STEP_STATES: Final = tuple(state for state in STATES if state not in TERMINAL_STATES)
# States whose step can fail the deploy; `fail` leads from each of them to `failed`, and
# the deploy's overall deadline bounds them.
WORKING_STATES: Final = HAPPY_PATH[1:8]
# States whose step can give up (after too many attempts, or for good): the working
# states and the rollback. `failed` and `unlocked` have nowhere else to go, so they are
# tried again however often the agent died there.
FALLIBLE_STATES: Final = (*WORKING_STATES, State.ROLLING_BACK)
# The working states after `locking`: they run only under a live slot of the deploy lock.
SLOT_STATES: Final = WORKING_STATES[1:]
# States that talk to the load balancer; without one they are left by `lb_skipped`.
LOAD_BALANCER_STATES: Final = (State.DEREGISTERING, State.DRAINING, State.REGISTERING)
# A failure in these states has touched no unit: there are no units to restore.
UNITS_UNTOUCHED_STATES: Final = (State.PENDING, State.LOCKING, State.DEREGISTERING, State.DRAINING)
# A failure in these states has not deregistered the instance: nothing to re-register.
LB_UNTOUCHED_STATES: Final = (State.PENDING, State.LOCKING)

FAIL_TRIGGER: Final = "fail"
LB_SKIPPED: Final = "lb_skipped"
SKIPPED_TRIGGER: Final = "skipped"
ROLLBACK_FAILED: Final = "rollback_failed"

# The trigger each step fires when it succeeded (for a service with a load balancer; see
# `success_trigger` for one without).
SUCCESS_TRIGGER: Final[Mapping[str, str]] = {
    "pending": "begin",
    "locking": "lock_acquired",
    "deregistering": "deregistered",
    "draining": "drained",
    "stopping": "units_stopped",
    "starting": "units_started",
    "registering": "registered",
    "healthy": "health_passed",
    "unlocked": "lock_released",
    "failed": "rollback",
    "rolling_back": "rollback_finished",
}

# The names of the guards (methods of `DeployMachine`), as the transitions and the
# diagram name them.
WITH_LB: Final = "has_load_balancer"
WITHOUT_LB: Final = "lacks_load_balancer"
SKIPS: Final = "skips_step"

# The states a deploy's own facts can make it skip (besides the load-balancer states of a
# service without one), and where each skip leads.
SKIPPABLE: Final[Mapping[str, str]] = {
    "deregistering": "draining",
    "draining": "stopping",
    "starting": "registering",
    "registering": "healthy",
}


def _move(
    trigger: str, source: str | tuple[str, ...], dest: str, **options: str
) -> Mapping[str, Any]:
    # Plain strings: `transitions` would name `State` members by their Python names.
    sources = [str(s) for s in source] if isinstance(source, tuple) else str(source)
    return {"trigger": trigger, "source": sources, "dest": str(dest), **options}


# The whole definition. `conditions` name guard methods of `DeployMachine`; `before` and
# `after` name the methods that note the facts `outcome` and `rollback_work` need.
TRANSITIONS: Final = (
    _move("begin", "pending", "locking"),
    _move("lock_acquired", "locking", "deregistering"),
    _move("deregistered", "deregistering", "draining", conditions=WITH_LB),
    _move(LB_SKIPPED, "deregistering", "draining", conditions=WITHOUT_LB),
    _move("drained", "draining", "stopping", conditions=WITH_LB),
    _move(LB_SKIPPED, "draining", "stopping", conditions=WITHOUT_LB),
    _move("units_stopped", "stopping", "starting"),
    _move("units_started", "starting", "registering"),
    _move("registered", "registering", "healthy", conditions=WITH_LB),
    _move(LB_SKIPPED, "registering", "healthy", conditions=WITHOUT_LB),
    _move("health_passed", "healthy", "unlocked"),
    *(_move(SKIPPED_TRIGGER, state, dest, conditions=SKIPS) for state, dest in SKIPPABLE.items()),
    _move("lock_released", "unlocked", "done"),
    _move(FAIL_TRIGGER, WORKING_STATES, "failed", before="_note_failure"),
    _move("rollback", "failed", "rolling_back"),
    _move("rollback_finished", "rolling_back", "unlocked"),
    _move(ROLLBACK_FAILED, "rolling_back", "unlocked", after="_note_rollback_failed"),
)
# Every trigger, in the order of first use.
TRIGGERS: Final = tuple(dict.fromkeys(t["trigger"] for t in TRANSITIONS))

# For each machine version whose checkpoints this definition can follow, the states it can
# take them over from. Version 2 added unassignments and the skips of unchanged traffic
# (new transitions only): a version 1 checkpoint has neither fact and runs as it did.
# Version 3 changed the meaning of three steps, not the table: `stopping`, `starting` and
# `healthy` (and the rollback) run the revision's lifecycle hooks (engine/deploy/hooks.py),
# and the history records each run. A version 2 agent must not take a version 3 deploy over
# (it would skip a `validate`); version 3 takes over every earlier state.
_RESUMABLE_STATES: Final[Mapping[int, frozenset[str]]] = {
    1: frozenset(STATES),
    2: frozenset(STATES),
    MACHINE_VERSION: frozenset(STATES),
}


class StepResult(Enum):
    """What the engine reports after performing a state's step; the machine turns it into
    the trigger to fire (`success_trigger`, `failure_trigger`)."""

    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"  # nothing to do here (a load-balancer state without one)
    FAILED = "failed"


class Outcome(StrEnum):
    """How a finished deploy ended (the engine's checkpoint stores the same words)."""

    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"  # the new revision failed; the previous one runs again
    FAILED = "failed"  # even the rollback failed


@dataclass(frozen=True)
class RollbackWork:
    """What `rolling_back` has to undo, given the state whose step failed."""

    restore_units: bool  # stop the new revision's units, start the previous revision's
    reregister: bool  # put the instance back into the load balancer

    @property
    def needed(self) -> bool:
        return self.restore_units or self.reregister


class DeployMachineError(Exception):
    """Root of this module's errors (machines/ cannot import the engine's error types)."""


class InvalidTransition(DeployMachineError):
    """A trigger that the current state, or its load-balancer guard, does not allow."""

    def __init__(self, state: str, trigger: str, *, has_load_balancer: bool) -> None:
        self.state = state
        self.trigger = trigger
        self.has_load_balancer = has_load_balancer
        allowed = allowed_triggers(state, has_load_balancer=has_load_balancer)
        known = "" if trigger in TRIGGERS else "unknown trigger "
        balancer = "with" if has_load_balancer else "without"
        super().__init__(
            f"{known}{trigger!r} is not allowed in state {state!r} ({balancer} a load "
            f"balancer); allowed there: {', '.join(allowed) or 'nothing (a final state)'}"
        )


class CannotResume(DeployMachineError):
    """A stored (machine version, state) that this definition cannot take over."""

    def __init__(self, machine_version: int, state: str) -> None:
        self.machine_version = machine_version
        self.state = state
        if machine_version == MACHINE_VERSION:
            message = f"{state!r} is not a state of deploy machine version {MACHINE_VERSION}"
        else:
            message = (
                f"a checkpoint at state {state!r} written by deploy machine version "
                f"{machine_version} cannot be resumed by version {MACHINE_VERSION}; "
                "finish it with an agent of that version"
            )
        super().__init__(message)


def can_resume(machine_version: int, state: str) -> bool:
    """Whether this definition can take over a checkpoint written at (version, state)."""
    return state in _RESUMABLE_STATES.get(machine_version, frozenset())


def allowed_triggers(
    state: str, *, has_load_balancer: bool, unassigning: bool = False, traffic_kept: bool = False
) -> tuple[str, ...]:
    """The triggers that `state` allows, with its guards applied."""
    skips = skip_reason(
        state,
        has_load_balancer=has_load_balancer,
        unassigning=unassigning,
        traffic_kept=traffic_kept,
    ) is not None and not (state in LOAD_BALANCER_STATES and not has_load_balancer)
    guard_passes = {WITH_LB: has_load_balancer, WITHOUT_LB: not has_load_balancer, SKIPS: skips}
    return tuple(
        dict.fromkeys(
            t["trigger"]
            for t in TRANSITIONS
            if state in sources(t) and guard_passes.get(t.get("conditions", ""), True)
        )
    )


def failure_trigger(state: str) -> str:
    """The trigger to fire when `state`'s step has failed: a failed rollback ends the
    deploy; any other failure starts the rollback."""
    return ROLLBACK_FAILED if state == ROLLING_BACK_STATE else FAIL_TRIGGER


def skip_reason(
    state: str, *, has_load_balancer: bool, unassigning: bool = False, traffic_kept: bool = False
) -> str | None:
    """Why `state`'s step is skipped in a deploy with these facts; None if it is performed.

    An unassignment always leaves the load balancer (it runs nothing afterwards), so
    `traffic_kept` never applies to one.
    """
    if state in LOAD_BALANCER_STATES and not has_load_balancer:
        return "the service has no load balancer"
    if unassigning and state == State.STARTING:
        return "assigned no revision: nothing to start"
    if unassigning and state == State.REGISTERING:
        return "assigned no revision: the instance stays out of the load balancer"
    if traffic_kept and not unassigning and state in LOAD_BALANCER_STATES:
        return "no unit that serves traffic changes: the instance stays in the load balancer"
    return None


def success_trigger(
    state: str, *, has_load_balancer: bool, unassigning: bool = False, traffic_kept: bool = False
) -> str:
    """The trigger to fire once `state`'s step has succeeded (or was skipped)."""
    if state not in SUCCESS_TRIGGER:
        raise InvalidTransition(state, "<success>", has_load_balancer=has_load_balancer)
    if state in LOAD_BALANCER_STATES and not has_load_balancer:
        return LB_SKIPPED
    facts = {"unassigning": unassigning, "traffic_kept": traffic_kept}
    if skip_reason(state, has_load_balancer=has_load_balancer, **facts) is not None:
        return SKIPPED_TRIGGER
    return SUCCESS_TRIGGER[state]


def outcome(*, failed: bool, rollback_failed: bool) -> Outcome:
    """The outcome of a deploy that reached `unlocked`.

    `unlocked` is entered three ways, and needs two facts to tell them apart: whether the
    deploy went through `failed` (the engine: the checkpoint records an error) and whether
    `rolling_back` ended with `rollback_failed` (the engine: it records a rollback error).
    health_passed → succeeded; rollback_finished → rolled_back; rollback_failed → failed.
    """
    if rollback_failed and not failed:
        raise ValueError("a rollback can only have failed in a deploy that failed")
    if not failed:
        return Outcome.SUCCEEDED
    return Outcome.FAILED if rollback_failed else Outcome.ROLLED_BACK


def rollback_work(
    failed_in: str | None, *, has_load_balancer: bool, traffic_kept: bool = False
) -> RollbackWork:
    """What to undo after a failure in `failed_in`.

    Steps before `stopping` touched no unit; steps before `deregistering` did not take the
    instance out of the load balancer (a failure *in* deregistering may already have), and
    a deploy that kept its traffic never took it out. A state that is unknown here (a lost
    history, or an older definition) gets everything undone: every rollback step is
    idempotent, so doing too much is safe.
    """
    in_balancer = has_load_balancer and not traffic_kept
    if failed_in not in WORKING_STATES:
        return RollbackWork(restore_units=True, reregister=in_balancer)
    return RollbackWork(
        restore_units=failed_in not in UNITS_UNTOUCHED_STATES,
        reregister=in_balancer and failed_in not in LB_UNTOUCHED_STATES,
    )


class DeployMachine:
    """One deploy's position in the machine, and the facts its guards and outcome need.

    Drive it with `fire`; the methods `transitions` adds (`begin()`, `may_fail()`, …) also
    work but return False where `fire` raises.
    """

    state: str  # set by transitions
    trigger: Callable[[str], bool]  # added by transitions

    def __init__(
        self,
        state: str = INITIAL_STATE,
        *,
        has_load_balancer: bool,
        failed_in: str | None = None,
        rollback_failed: bool = False,
        unassigning: bool = False,
        traffic_kept: bool = False,
    ) -> None:
        if state not in STATES:
            raise CannotResume(MACHINE_VERSION, state)
        if failed_in is not None and failed_in not in STATES:
            raise ValueError(f"failed_in must be a state, not {failed_in!r}")
        if rollback_failed and (failed_in is None or state not in (UNLOCKED_STATE, DONE_STATE)):
            raise ValueError("only a failed deploy past rolling_back can have a failed rollback")
        self._has_load_balancer = has_load_balancer
        self._unassigning = unassigning
        self._traffic_kept = traffic_kept
        self._failed_in = failed_in
        self._failed = failed_in is not None or state in FAILURE_STATES
        self._rollback_failed = rollback_failed
        self._machine = Machine(
            model=self,
            states=[str(s) for s in STATES],
            transitions=[dict(t) for t in TRANSITIONS],
            initial=str(state),
            auto_transitions=False,
            send_event=False,
        )

    @classmethod
    def restore(
        cls,
        machine_version: int,
        state: str,
        *,
        has_load_balancer: bool,
        failed_in: str | None = None,
        rollback_failed: bool = False,
        unassigning: bool = False,
        traffic_kept: bool = False,
    ) -> DeployMachine:
        """The machine at a checkpoint's state; `CannotResume` if this definition can't.

        No `on_enter` runs for the restored state: the engine performs its step itself.
        """
        if not can_resume(machine_version, state):
            raise CannotResume(machine_version, state)
        return cls(
            state,
            has_load_balancer=has_load_balancer,
            failed_in=failed_in,
            rollback_failed=rollback_failed,
            unassigning=unassigning,
            traffic_kept=traffic_kept,
        )

    # --- guards and the facts noted on the way -------------------------------------------

    def has_load_balancer(self) -> bool:
        return self._has_load_balancer

    def lacks_load_balancer(self) -> bool:
        return not self._has_load_balancer

    def skips_step(self) -> bool:
        """The guard of `skipped`: this deploy's facts skip the current state's step (the
        load-balancer states of a service without one are left by `lb_skipped`)."""
        lb_skip = self.state in LOAD_BALANCER_STATES and not self._has_load_balancer
        return self.skip_reason is not None and not lb_skip

    def note_traffic_kept(self, kept: bool) -> None:
        """The fact `locking`'s step decides (which units change); fixed from then on."""
        if self.state != State.LOCKING:
            raise ValueError("whether traffic is kept is decided in locking, and only there")
        self._traffic_kept = kept

    @property
    def skip_reason(self) -> str | None:
        """Why the current state's step is skipped; None if the engine performs it."""
        return skip_reason(self.state, **self._facts)

    @property
    def _facts(self) -> dict[str, bool]:
        return {
            "has_load_balancer": self._has_load_balancer,
            "unassigning": self._unassigning,
            "traffic_kept": self._traffic_kept,
        }

    def _note_failure(self) -> None:
        self._failed = True
        self._failed_in = self.state  # `before` runs while the source is still current

    def _note_rollback_failed(self) -> None:
        self._rollback_failed = True

    @property
    def failed_in(self) -> str | None:
        """The state whose step failed, if one did and it is known."""
        return self._failed_in

    @property
    def outcome(self) -> Outcome | None:
        """The outcome, once `unlocked` or `done` is reached; None before."""
        if self.state not in (UNLOCKED_STATE, DONE_STATE):
            return None
        return outcome(failed=self._failed, rollback_failed=self._rollback_failed)

    @property
    def rollback_work(self) -> RollbackWork | None:
        """What `rolling_back` has to undo; None while nothing has failed."""
        if not self._failed:
            return None
        return rollback_work(
            self._failed_in,
            has_load_balancer=self._has_load_balancer,
            traffic_kept=self._traffic_kept and not self._unassigning,
        )

    @property
    def working(self) -> bool:
        """Whether the current step can fail the deploy (and its overall deadline applies)."""
        return self.state in WORKING_STATES

    @property
    def can_fail(self) -> bool:
        """Whether the current step may give up (e.g. after too many attempts)."""
        return self.state in FALLIBLE_STATES

    @property
    def holds_slot(self) -> bool:
        """Whether the current step must run under a live slot of the deploy lock."""
        return self.state in SLOT_STATES

    @property
    def rolling_back(self) -> bool:
        """Whether the current step restores the previous revision (its failure is a
        failed rollback, not a failed deploy)."""
        return self.state == State.ROLLING_BACK

    @property
    def allowed_triggers(self) -> tuple[str, ...]:
        return allowed_triggers(self.state, **self._facts)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    # --- moving ----------------------------------------------------------------------------

    def fire(self, trigger: str) -> str:
        """Fire `trigger`; return the new state, or raise `InvalidTransition`."""
        before = self.state

        def refused() -> InvalidTransition:
            return InvalidTransition(before, trigger, has_load_balancer=self._has_load_balancer)

        if trigger not in TRIGGERS:
            raise refused()
        try:
            moved = self.trigger(trigger)
        except MachineError as exc:  # no transition for this trigger from this state
            raise refused() from exc
        if not moved:  # a load-balancer guard said no
            raise refused()
        return self.state

    def advance(self, result: StepResult) -> str:
        """Move on from the current state's step as `result` says; return the new state."""
        if result is StepResult.FAILED:
            return self.fire(failure_trigger(self.state))
        return self.fire(success_trigger(self.state, **self._facts))


def sources(transition: Mapping[str, Any]) -> list[str]:
    """The states a transition of `TRANSITIONS` leaves from."""
    source = transition["source"]
    return list(source) if isinstance(source, list) else [source]
