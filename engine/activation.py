"""Which units of a revision to start, and what "running well" means for each.

- `.timer` and `.socket` units are started; the `.service` they activate (same stem, or
  named by `Unit=` / `Service=`) is not: starting it would run a timer's job at once.
- A `Type=oneshot` service without `RemainAfterExit=yes` runs and exits: it is well when
  it is active or has exited with success, not only while active.
- Every other started unit must be active and stay active through the settle period.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flotilla.engine.ports import UnitStatus
from flotilla.engine.units import unit_settings

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


def is_well(status: UnitStatus, *, run_once: bool) -> bool:
    if status.active_state in ("active", "reloading"):
        return True
    if run_once:
        return status.active_state in ("activating", "inactive") and status.result == "success"
    return False
