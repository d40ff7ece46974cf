"""A unit runtime in memory, for simulations of thousands of instances.

No runtime in adapters/ is light enough for 10 000 simulated machines (the process
runtime starts a supervisor process per unit). This one keeps the installed units of one
simulated machine in a dict and applies the rules of the `UnitRuntime` contract that do
not need a process: names rendered by `engine.units` (so a revision renders exactly as it
would on a machine), only owned names accepted, every operation idempotent, a unit never
installed is `inactive`, a removed unit stays owned while it runs, environments for units
not in the revision refused. It is NOT verified by tests/contract/test_unit_runtime.py,
whose cases need real processes and files; tests/simulation/test_runtime.py checks the
rules above. The simulation tests the scheduler, the runner and the locks, not systemd.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flotilla.engine.errors import UnitFailedError
from flotilla.engine.ports import UnitStatus
from flotilla.engine.units import plan_installation, require_owned


@dataclass
class _Unit:
    text: str
    installed: bool = True
    active: bool = False


class MemoryUnitRuntime:
    """`UnitRuntime` of one simulated machine. `fail_units` names units that exit at once."""

    def __init__(self, fail_units: frozenset[str] = frozenset()) -> None:
        self._units: dict[str, _Unit] = {}
        self.fail_units = fail_units
        self.calls = 0

    def owned_units(self) -> list[str]:
        self.calls += 1
        return sorted(n for n, u in self._units.items() if u.installed or u.active)

    def install(
        self,
        revision_id: str,
        units: Mapping[str, str],
        environments: Mapping[str, Mapping[str, str]],
    ) -> list[str]:
        self.calls += 1
        planned = plan_installation(revision_id, units, environments, "/run/flotilla/env")
        for unit in planned:
            current = self._units.get(unit.installed)
            if current is None:
                self._units[unit.installed] = _Unit(unit.text)
            else:
                current.installed = True
        return [unit.installed for unit in planned]

    def start(self, names: Sequence[str]) -> None:
        self.calls += 1
        for name in require_owned(names):
            unit = self._units.get(name)
            if unit is None or not unit.installed:
                raise UnitFailedError(
                    f"unit {name} is not installed", unit=name, result="not-found"
                )
            if any(name.startswith(f"flotilla-{failing}-") for failing in self.fail_units):
                raise UnitFailedError(
                    f"unit {name} exited right after it started (exit status 1)",
                    unit=name,
                    result="exit-code",
                    exit_status=1,
                )
            unit.active = True

    def status(self, names: Sequence[str]) -> list[UnitStatus]:
        self.calls += 1
        found = []
        for name in names:
            unit = self._units.get(name)
            if unit is not None and unit.active:
                found.append(UnitStatus(name, "active", "running", "success"))
            else:
                found.append(UnitStatus(name, "inactive", "dead", "success"))
        return found

    def stop(self, names: Sequence[str]) -> None:
        self.calls += 1
        for name in require_owned(names):
            unit = self._units.get(name)
            if unit is None:
                continue
            unit.active = False
            if not unit.installed:
                del self._units[name]

    def remove(self, names: Sequence[str]) -> None:
        self.calls += 1
        for name in require_owned(names):
            unit = self._units.get(name)
            if unit is None:
                continue
            if unit.active:
                unit.installed = False  # still owned (and running) until stopped
            else:
                del self._units[name]

    def active(self) -> list[str]:
        return sorted(n for n, u in self._units.items() if u.active)
