"""A unit runtime in memory: the units of one simulated machine, for the simulation of
thousands of instances and the fault tests.

No other runtime is light enough for 10 000 simulated machines (the process runtime
starts a supervisor process per unit). This one keeps a machine's unit files, environment
files and unit states in a `MemoryMachine` and is trusted because it passes the unit
runtime contract suite (tests/contract/test_unit_runtime.py) as systemd's and the process
runtime do: names and files rendered by `engine.units` (a revision renders exactly as on
a machine), only owned names touched, every operation idempotent, a unit that cannot load
refused, a removed unit owned while it runs, and `start` settled by the port's rule and
loop (`engine.activation.settle`) with the one failure message.

It runs no process. What a unit's program does when started is the machine's `exits`:
the exit status it ends with at once, or None for a program that keeps running (a
oneshot's then exits 0). By default every program keeps running. Like systemd (and unlike
the process runtime) it takes timers, sockets and template instances; a timer or socket
is active once started and triggers nothing.

A lifecycle hook runs no script either: the machine's `hook_exits` says how it ends (an
exit status, or None for a hook that hangs until its timeout) and `hook_runs` records
each run (the hook unit and the environment it was given), for the tests to look at.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from flotilla.engine.activation import settle
from flotilla.engine.clock import Clock, SystemClock
from flotilla.engine.errors import UnitFailedError, ValidationError
from flotilla.engine.hooks import is_hook_unit
from flotilla.engine.ports import HookCommand, HookResult, UnitStatus
from flotilla.engine.unit_syntax import unit_settings
from flotilla.engine.units import (
    environment_file_name,
    is_owned,
    parse_installed_name,
    plan_installation,
    require_owned,
)

# What a started unit's program does: its exit status at once, or None if it keeps running.
Exits = Callable[[str, str], int | None]  # (installed name, unit file text)
ENVIRONMENT_DIR = "/run/flotilla/env"  # where EnvironmentFile= points, as on a machine
_TRUE = {"yes", "true", "on", "1"}
_STARTED = {"timer": "waiting", "socket": "listening"}  # the sub-state of a started one


def keeps_running(_name: str, _text: str) -> int | None:
    return None


def hooks_succeed(_unit: str, _script: str) -> int | None:
    return 0


def exits_at_once(units: Collection[str], status: int = 1) -> Exits:
    """A machine on which the programs of these units (named as in the revision, e.g.
    "broken.service") exit with `status` as soon as they start; all others keep running."""

    def exits(name: str, _text: str) -> int | None:
        parsed = parse_installed_name(name)
        return status if parsed is not None and parsed.unit in units else None

    return exits


@dataclass
class MemoryMachine:
    """What one simulated machine holds; every runtime built on it sees the same units (a
    restarted agent is a new `MemoryUnitRuntime` on the same machine)."""

    exits: Exits = keeps_running
    unit_files: dict[str, str] = field(default_factory=dict)  # name -> text, others' too
    environment_files: dict[str, str] = field(default_factory=dict)  # file name -> text
    drop_ins: dict[str, str] = field(default_factory=dict)  # unit name -> its sandbox drop-in
    states: dict[str, UnitStatus] = field(default_factory=dict)  # units that ran
    last_pid: int = 1000  # each started service's main process gets the next number
    hook_exits: Exits = hooks_succeed  # (hook unit, script) -> exit status, None: hangs
    hook_runs: list[tuple[str, dict[str, str]]] = field(default_factory=list)


class MemoryUnitRuntime:
    """`UnitRuntime` of one simulated machine."""

    def __init__(self, machine: MemoryMachine | None = None, clock: Clock | None = None) -> None:
        self.machine = machine or MemoryMachine()
        # Starting settles at once here (nothing runs), so the clock is only read.
        self.clock: Clock = clock or SystemClock()

    def owned_units(self) -> list[str]:
        files = {name for name in self.machine.unit_files if is_owned(name)}
        # A unit whose file is gone but which still runs (or failed) is still ours to stop.
        busy = {
            name
            for name, state in self.machine.states.items()
            if is_owned(name) and state.active_state != "inactive"
        }
        return sorted(files | busy)

    def install(
        self,
        revision_id: str,
        units: Mapping[str, str],
        environments: Mapping[str, Mapping[str, str]],
        names: Mapping[str, str] | None = None,
    ) -> list[str]:
        planned = plan_installation(revision_id, units, environments, ENVIRONMENT_DIR, names)
        for unit in planned:
            if unit.environment is not None and unit.environment_file is not None:
                self.machine.environment_files[unit.environment_file] = unit.environment
            if unit.drop_in is None:
                self.machine.drop_ins.pop(unit.installed, None)
            else:
                self.machine.drop_ins[unit.installed] = unit.drop_in
            self.machine.unit_files[unit.installed] = unit.text
        return [unit.installed for unit in planned]

    def start(self, names: Sequence[str]) -> None:
        names = require_owned(names)
        templates = [name for name in names if _is_template(name)]
        if templates:
            raise ValidationError(
                f"cannot start template unit(s) {', '.join(templates)} without an instance; "
                "start an instance such as 'name@1.service' or a socket that spawns them"
            )
        texts = {name: self._loadable(name) for name in names}  # all checked first
        for name, text in texts.items():
            if self._state(name).active_state not in ("active", "activating", "reloading"):
                self.machine.states[name] = self._run(name, text)
        settle(
            names,
            self.status,
            clock=self.clock,
            run_once=[name for name, text in texts.items() if _service(text).kind == "oneshot"],
        )

    def status(self, names: Sequence[str]) -> list[UnitStatus]:
        return [self._state(name) for name in names]

    def stop(self, names: Sequence[str]) -> None:
        for name in require_owned(names):
            for target in self._instances(name):
                state = self.machine.states.get(target)
                if state is None or state.active_state in ("inactive", "failed"):
                    continue  # a failed unit stays failed until it is removed (reset)
                if target in self.machine.unit_files:
                    self.machine.states[target] = UnitStatus(target, "inactive", "dead", "success")
                else:
                    del self.machine.states[target]  # removed while it ran: now forgotten

    def remove(self, names: Sequence[str]) -> None:
        for name in require_owned(names):
            self.machine.unit_files.pop(name, None)
            self.machine.drop_ins.pop(name, None)
            self.machine.environment_files.pop(environment_file_name(name), None)
            if self._state(name).active_state in ("inactive", "failed"):
                self.machine.states.pop(name, None)

    def run_hook(self, command: HookCommand, *, between: Callable[[], None]) -> HookResult:
        if not is_hook_unit(command.unit):
            raise ValidationError(f"{command.unit!r} is not the name of a hook's unit")
        self.machine.hook_runs.append((command.unit, dict(command.environment)))
        between()
        status = self.machine.hook_exits(command.unit, command.script)
        if status is None:  # hangs: stopped at its timeout, as systemd would
            return HookResult(command.unit, "timeout", None, float(command.timeout_seconds))
        return HookResult(command.unit, "success" if status == 0 else "exit-code", status, 0.0)

    def active(self) -> list[str]:
        """The units active now (for the simulations' checks)."""
        states = self.machine.states.values()
        return sorted(state.name for state in states if state.active_state == "active")

    # Inside.

    def _state(self, name: str) -> UnitStatus:
        found = self.machine.states.get(name)
        return found or UnitStatus(name, "inactive", "dead", "success")

    def _loadable(self, name: str) -> str:
        """The unit's file (a template's for an instance), or why systemd would not load it."""
        stem, _, suffix = name.rpartition(".")
        base, at, _instance = stem.partition("@")
        text = self.machine.unit_files.get(f"{base}@.{suffix}" if at else name)
        if text is None:
            raise UnitFailedError(
                f"unit {name} is not installed; install its revision first",
                unit=name,
                result="not-found",
            )
        if suffix == "service" and not _service(text).commands:
            raise UnitFailedError(
                f"the memory runtime refused unit {name}: the service has no ExecStart=",
                unit=name,
                result="bad-setting",
            )
        return text

    def _run(self, name: str, text: str) -> UnitStatus:
        suffix = name.rsplit(".", 1)[-1]
        if suffix in _STARTED:
            return UnitStatus(name, "active", _STARTED[suffix], "success")
        service = _service(text)
        status = self.machine.exits(name, text)
        if service.kind == "oneshot":
            status = status or 0  # a oneshot's program always ends
        if status is None:
            self.machine.last_pid += 1
            return UnitStatus(name, "active", "running", "success", main_pid=self.machine.last_pid)
        if status != 0:
            return UnitStatus(name, "failed", "failed", "exit-code", status)
        if service.kind == "oneshot" and service.remain_after_exit:
            return UnitStatus(name, "active", "exited", "success", 0)
        return UnitStatus(name, "inactive", "dead", "success", 0)

    def _instances(self, name: str) -> list[str]:
        """A template stands for its instances that ran; any other name for itself."""
        if not _is_template(name):
            return [name]
        stem, _, suffix = name.rpartition(".")
        return [
            other
            for other in self.machine.states
            if other.startswith(stem) and other.endswith(f".{suffix}") and other != name
        ]


@dataclass(frozen=True)
class _Service:
    kind: str
    remain_after_exit: bool
    commands: tuple[str, ...]


def _service(text: str) -> _Service:
    settings = [(key, value) for section, key, value in unit_settings(text) if section == "Service"]
    kinds = [value for key, value in settings if key == "Type"]
    remain = [value for key, value in settings if key == "RemainAfterExit"]
    commands: list[str] = []
    for key, value in settings:
        if key == "ExecStart":  # an empty assignment resets the list, as in systemd
            commands = [*commands, value] if value else []
    return _Service(
        kind=kinds[-1] if kinds else "simple",
        remain_after_exit=bool(remain) and remain[-1].lower() in _TRUE,
        commands=tuple(commands),
    )


def _is_template(name: str) -> bool:
    return name.rpartition(".")[0].endswith("@")
