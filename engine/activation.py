"""Which units of a revision to start, what "running well" means, and the one settle loop.

- `.timer` and `.socket` units are started; the `.service` they activate (same stem, or
  named by `Unit=` / `Service=`) is not: starting it would run a timer's job at once.
- A `Type=oneshot` service without `RemainAfterExit=yes` runs and exits: it is well once it
  has exited with success, not only while active.
- Every other started unit must be active and stay active through the settle period.

`judge` is the one test of a unit's state, `settle` the one loop that waits on it (every
unit runtime's `start` and the deploy's settle period use it), and `unit_failure` the one
message for a unit that is not running well. The rule they carry out is written in the
`UnitRuntime` port (engine/ports.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from flotilla.engine.clock import Clock
from flotilla.engine.errors import UnitFailedError
from flotilla.engine.ports import UnitStatus
from flotilla.engine.unit_syntax import unit_settings

_TRUE = {"yes", "true", "on", "1"}


@dataclass(frozen=True)
class ActivationPlan:
    start: tuple[str, ...]  # units to start, in the revision's names
    run_once: frozenset[str]  # oneshot services: success counts as well


def plan_activation(units: Mapping[str, str]) -> ActivationPlan:
    triggered: set[str] = set()
    run_once: set[str] = set()
    for name, text in units.items():
        stem, _, suffix = name.rpartition(".")
        settings = unit_settings(text)
        if suffix in ("timer", "socket"):
            targets = [
                v for s, k, v in settings if (s, k) in {("Timer", "Unit"), ("Socket", "Service")}
            ]
            triggered.update(target for value in targets for target in value.split())
            if not targets:
                triggered.add(f"{stem}.service")
        if suffix == "service":
            service = {key: value for section, key, value in settings if section == "Service"}
            if (
                service.get("Type") == "oneshot"
                and service.get("RemainAfterExit", "").lower() not in _TRUE
            ):
                run_once.add(name)
    start = tuple(name for name in sorted(units) if name not in triggered)
    return ActivationPlan(start=start, run_once=frozenset(run_once))


class Verdict(StrEnum):
    """Where a started unit stands."""

    SETTLING = "settling"  # in a transitional state: activating, or a oneshot finishing
    WELL = "well"  # active, or a oneshot that exited 0
    FAILED = "failed"  # failed, restarting after a crash, or stopped when it should run


def judge(status: UnitStatus, *, run_once: bool) -> Verdict:
    """The one test of "running well", in systemd's words for a unit's state."""
    if status.active_state == "failed" or status.sub_state == "auto-restart":
        return Verdict.FAILED  # auto-restart: it crashed and systemd waits to start it again
    if status.active_state in ("active", "reloading"):
        return Verdict.WELL
    if status.active_state == "activating":
        return Verdict.SETTLING
    if run_once and status.result == "success":
        # A oneshot that ran: done when inactive, about to be when deactivating.
        return Verdict.WELL if status.active_state == "inactive" else Verdict.SETTLING
    return Verdict.FAILED  # inactive or deactivating: it stopped although it should run


def unit_failure(
    status: UnitStatus, what: str, hint: str = "", *, result: str | None = None
) -> UnitFailedError:
    """The one message for a unit that is not running well: what happened, its state in
    systemd's words, and where to look (`hint`, which only the runtime knows)."""
    exit_note = "" if status.exit_status is None else f", exit status {status.exit_status}"
    message = (
        f"unit {status.name} {what}: {status.active_state}/{status.sub_state}, "
        f"result {status.result}{exit_note}"
    )
    return UnitFailedError(
        f"{message}; {hint}" if hint else message,
        unit=status.name,
        result=result or status.result,
        exit_status=status.exit_status,
    )


def settle(
    names: Sequence[str],
    read: Callable[[list[str]], Sequence[UnitStatus]],
    *,
    clock: Clock,
    run_once: Collection[str] = (),
    hold: float = 0.0,
    settle_timeout: float = 0.0,
    poll: float = 0.5,
    what: str = "failed to start",
    just_started: bool = True,
    hint: Callable[[str], str] = lambda _name: "",
    between: Callable[[], None] = lambda: None,
) -> None:
    """Wait until every unit has left its transitional state, then watch them stay well.

    Returns once every unit is well and has stayed so for `hold` seconds. Raises
    `UnitFailedError` (built by `unit_failure`) as soon as one fails, when one is still
    settling `settle_timeout` seconds after the first look, or when one that had settled
    goes back to a transitional state (a restart means it stopped in between). `read`
    gives the units' statuses, `run_once` names the oneshots (well once they exited 0),
    `between` runs before each sleep (a deploy keeps its lease alive there). `what` heads
    the message; when the units `just_started`, it also says how soon one stopped.
    """
    names = list(names)
    if not names:
        return
    began = clock.now()
    settle_by = began + timedelta(seconds=settle_timeout)
    hold_until = None  # set once every unit has settled
    settled: set[str] = set()
    first_look = True
    while True:
        settling = []
        for status in read(names):
            verdict = judge(status, run_once=status.name in run_once)
            if verdict is Verdict.FAILED:
                if just_started and first_look:
                    when = " (exited right after it started)"
                elif just_started:
                    elapsed = (clock.now() - began).total_seconds()
                    when = f" (stopped within {elapsed:.1f} s of starting)"
                else:
                    when = ""
                raise unit_failure(status, what + when, hint(status.name))
            if verdict is Verdict.WELL:
                settled.add(status.name)
            elif status.name in settled:
                raise unit_failure(status, f"{what} (it restarted)", hint(status.name))
            else:
                settling.append(status)
        first_look = False
        now = clock.now()
        if settling:
            if now >= settle_by:
                late = settling[0]
                raise unit_failure(
                    late,
                    f"{what} (still {late.active_state} after {settle_timeout:g} s)",
                    hint(late.name),
                    result="timeout",
                )
            wake = settle_by
        else:
            hold_until = hold_until or now + timedelta(seconds=hold)
            if now >= hold_until:
                return
            wake = hold_until
        between()
        clock.sleep(min(poll, (wake - clock.now()).total_seconds()))
