"""The deploy state machine: states, triggers and guards, nothing else.

Happy path (DESIGN.md):

    pending → locking → deregistering → draining → stopping → starting → registering
            → healthy → unlocked → done

Failure path: any working state can `fail` → failed → rolling_back → unlocked → done.
A service without a load balancer still passes through deregistering, draining and
registering, by the explicit `lb_skipped` trigger, so the history shows them as skipped
rather than silently missing. Guards check that `lb_skipped` is used only without a load
balancer and the load-balancer triggers only with one.

Pure: no I/O, no clock. The engine performs each state's step and fires its trigger.
Restoring at a stored state (`DeployMachine(state)`) fires no callbacks, which suits the
engine: on resume it performs the current state's step itself.
"""

from __future__ import annotations

from typing import Any

from transitions import Machine, MachineError

# Bump when states or transitions change in a way an older checkpoint cannot follow.
MACHINE_VERSION = 1

INITIAL_STATE = "pending"
DONE_STATE = "done"
HAPPY_PATH = (
    "pending",
    "locking",
    "deregistering",
    "draining",
    "stopping",
    "starting",
    "registering",
    "healthy",
    "unlocked",
    "done",
)
FAILURE_STATES = ("failed", "rolling_back")
STATES = (*HAPPY_PATH, *FAILURE_STATES)
# States whose step can fail for good; `fail` leads from each to the failure path.
WORKING_STATES = HAPPY_PATH[:8]
LOAD_BALANCER_STATES = ("deregistering", "draining", "registering")
# States before any unit was touched: a failure there needs no units restored.
UNTOUCHED_STATES = ("pending", "locking", "deregistering", "draining")

FAIL_TRIGGER = "fail"
LB_SKIPPED = "lb_skipped"

# The trigger a working state's step fires when it succeeded (with a load balancer).
SUCCESS_TRIGGER = {
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
}

_WITH_LB = "has_load_balancer"
_WITHOUT_LB = "lacks_load_balancer"

TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "begin", "source": "pending", "dest": "locking"},
    {"trigger": "lock_acquired", "source": "locking", "dest": "deregistering"},
    {
        "trigger": "deregistered",
        "source": "deregistering",
        "dest": "draining",
        "conditions": _WITH_LB,
    },
    {
        "trigger": LB_SKIPPED,
        "source": "deregistering",
        "dest": "draining",
        "conditions": _WITHOUT_LB,
    },
    {"trigger": "drained", "source": "draining", "dest": "stopping", "conditions": _WITH_LB},
    {"trigger": LB_SKIPPED, "source": "draining", "dest": "stopping", "conditions": _WITHOUT_LB},
    {"trigger": "units_stopped", "source": "stopping", "dest": "starting"},
    {"trigger": "units_started", "source": "starting", "dest": "registering"},
    {"trigger": "registered", "source": "registering", "dest": "healthy", "conditions": _WITH_LB},
    {"trigger": LB_SKIPPED, "source": "registering", "dest": "healthy", "conditions": _WITHOUT_LB},
    {"trigger": "health_passed", "source": "healthy", "dest": "unlocked"},
    {"trigger": "lock_released", "source": "unlocked", "dest": "done"},
    {"trigger": FAIL_TRIGGER, "source": list(WORKING_STATES), "dest": "failed"},
    {"trigger": "rollback", "source": "failed", "dest": "rolling_back"},
    {"trigger": "rollback_finished", "source": "rolling_back", "dest": "unlocked"},
    {"trigger": "rollback_failed", "source": "rolling_back", "dest": "unlocked"},
]


class InvalidTransition(Exception):
    """A trigger that the current state (or its guard) does not allow."""


class DeployMachine:
    """One deploy's position in the machine; `fire` moves it."""

    state: str

    def __init__(self, state: str = INITIAL_STATE, *, has_load_balancer: bool = True) -> None:
        if state not in STATES:
            raise InvalidTransition(f"unknown state {state!r}")
        self._has_load_balancer = has_load_balancer
        self._machine = Machine(
            model=self,
            states=list(STATES),
            transitions=TRANSITIONS,
            initial=state,
            auto_transitions=False,
            send_event=False,
        )

    def has_load_balancer(self) -> bool:
        return self._has_load_balancer

    def lacks_load_balancer(self) -> bool:
        return not self._has_load_balancer

    def fire(self, trigger: str) -> str:
        """Fire `trigger`; return the new state, or raise `InvalidTransition`."""
        before = self.state
        try:
            moved = self.trigger(trigger)  # type: ignore[attr-defined]  # added by transitions
        except (MachineError, AttributeError) as exc:
            raise InvalidTransition(f"{trigger!r} is not allowed in state {before!r}") from exc
        if not moved:  # a guard said no
            raise InvalidTransition(
                f"{trigger!r} is not allowed in state {before!r} "
                f"({'with' if self._has_load_balancer else 'without'} a load balancer)"
            )
        return self.state


def next_state(state: str, trigger: str, *, has_load_balancer: bool = True) -> str:
    return DeployMachine(state, has_load_balancer=has_load_balancer).fire(trigger)


def can_resume(machine_version: int, state: str) -> bool:
    """Whether this definition can take over a checkpoint written at (version, state)."""
    return machine_version == MACHINE_VERSION and state in STATES


def rollback_needed(failed_in: str) -> bool:
    """Units need restoring only if the failure came once units were touched."""
    return failed_in not in UNTOUCHED_STATES


def mermaid() -> str:
    """The machine as a Mermaid state diagram (rendered in docs/deploy-machine.md)."""
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL_STATE}"]
    for transition in TRANSITIONS:
        sources = transition["source"]
        for source in sources if isinstance(sources, list) else [sources]:
            label = transition["trigger"]
            if "conditions" in transition:
                label += " [LB]" if transition["conditions"] == _WITH_LB else " [no LB]"
            lines.append(f"    {source} --> {transition['dest']}: {label}")
    lines.append(f"    {DONE_STATE} --> [*]")
    return "\n".join(lines) + "\n"
