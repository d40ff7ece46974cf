"""ProcessRuntime: the unit runtime for machines without systemd (the demo on a laptop).

Each started `.service` unit gets a small supervisor process (`process_units.supervisor`)
that detaches from the agent, runs the unit's ExecStart= as a child in its own process
group, and records in a state file (`process_units.state`, in the state directory) the
pids, ActiveState, SubState, Result and exit status in systemd's words. A restarted agent
reads those files to find, report and stop its units. `start` settles the units by the
rule and loop of the `UnitRuntime` port (`engine.activation.settle`), as systemd's does.
The unit and environment files are `adapters.unit_files`, shared with systemd's runtime.

It reads (`process_units.spec`): Type= (simple, exec, idle, oneshot with
RemainAfterExit=), ExecStart= (quoting, C escapes, the prefixes `-` `@` `:`, `$VAR` and
`${VAR}`, the specifiers %% %n %N %p %i), Environment=, EnvironmentFile= (systemd's
syntax, `-` for optional), WorkingDirectory=, StandardOutput=/StandardError= (`append:`,
`file:`, `truncate:`, `null`; anything else goes to <state>/log/<unit>.log),
TimeoutStopSec= (in seconds; 10 s when not given).

What it does not do, honestly:
- no cgroups: stop signals the process group, so a process that leaves it escapes;
- no socket or timer activation: `.socket` and `.timer` units, and templates, are refused
  at install (ConfigurationError); Type=forking, notify and dbus are refused at start;
- no dependencies or ordering: After=, Requires=, Wants= … are kept in the installed
  file (renamed like systemd's) but not acted on; each named unit is started on its own;
- no restart policies (Restart= is ignored), no SuccessExitStatus=, no ExecStop=;
- no sandboxing, no User=/Group=: everything runs as the agent's user;
- no journal: output goes to files (a hook's to <state>/log/<hook unit>.log);
- lifecycle hooks run as child processes in their own process group (not transient
  units): killed at their timeout (SIGTERM, then SIGKILL), and a run left by a crashed
  agent (its pid in <state>/run) is killed before the hook runs again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flotilla.adapters.hook_files import hook_dir_beside, remove_hook_files, write_hook_files
from flotilla.adapters.process_units import supervisor
from flotilla.adapters.process_units.spec import ServiceSpec, UnitSettingError
from flotilla.adapters.process_units.state import (
    alive,
    read_state,
    started,
    unit_status,
    write_state,
)
from flotilla.adapters.unit_files import UnitFiles
from flotilla.engine.activation import settle, unit_failure
from flotilla.engine.clock import Clock, SystemClock
from flotilla.engine.errors import ConfigurationError, UnitFailedError, ValidationError
from flotilla.engine.hooks import hook_argv, is_hook_unit
from flotilla.engine.ports import HookCommand, HookResult, UnitStatus
from flotilla.engine.units import PREFIX, plan_installation, require_owned

_HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # systemd's default
_HOOK_STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL at a hook's timeout


class ProcessRuntime:
    """`UnitRuntime` with local processes; see the module docstring for what it lacks."""

    def __init__(
        self,
        state_dir: Path,
        clock: Clock | None = None,
        *,
        environment_dir: Path | None = None,
        start_timeout: float = 120.0,
        settle_seconds: float = 0.5,
        poll_interval: float = 0.02,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.files = UnitFiles(self.state_dir / "units", environment_dir or self.state_dir / "env")
        self.hook_dir = hook_dir_beside(self.files.environment_dir)
        self.clock: Clock = clock or SystemClock()
        self.start_timeout = start_timeout
        self.settle_seconds = settle_seconds
        self.poll_interval = poll_interval

    def owned_units(self) -> list[str]:
        # A unit whose file was removed while it ran (or failed) is still ours to stop.
        busy = {
            path.name.removesuffix(".json")
            for path in self._run_dir().glob(f"{PREFIX}*.json")
            if self._status(path.name.removesuffix(".json")).active_state != "inactive"
        }
        return sorted(busy | set(self.files.installed()))

    def install(
        self,
        revision_id: str,
        units: Mapping[str, str],
        environments: Mapping[str, Mapping[str, str]],
        names: Mapping[str, str] | None = None,
    ) -> list[str]:
        unsupported = sorted(u for u in units if not u.endswith(".service") or "@" in u)
        if unsupported:
            raise ConfigurationError(
                f"the process runtime cannot run {', '.join(unsupported)}: it has no socket or "
                "timer activation and no templates; deploy this revision where systemd runs"
            )
        planned = plan_installation(
            revision_id, units, environments, str(self.files.environment_dir), names
        )
        self.files.write(planned)
        return [unit.installed for unit in planned]

    def start(self, names: Sequence[str]) -> None:
        specs = {name: self._spec(name) for name in require_owned(names)}  # all checked first
        launched = {
            name: self._launch(name)
            for name in specs
            if self._status(name).active_state not in ("active", "activating")
        }
        deadline = self.clock.now() + timedelta(seconds=self.start_timeout)
        # Like waiting for systemd's start job: until the supervisor of this start says the
        # unit got past starting (a oneshot: ran to its end).
        for name, invocation in launched.items():
            while not started(self._state(name), invocation):
                if self.clock.now() >= deadline:
                    raise unit_failure(
                        self._status(name),
                        f"did not finish starting within {self.start_timeout} s",
                        self._hint(name),
                        result="timeout",
                    )
                self.clock.sleep(self.poll_interval)
        settle(
            list(specs),
            self.status,
            clock=self.clock,
            run_once=[name for name, spec in specs.items() if spec.kind == "oneshot"],
            hold=self.settle_seconds,
            settle_timeout=max(0.0, (deadline - self.clock.now()).total_seconds()),
            poll=self.poll_interval,
            hint=self._hint,
        )

    def status(self, names: Sequence[str]) -> list[UnitStatus]:
        return [self._status(name) for name in names]

    def stop(self, names: Sequence[str]) -> None:
        names = require_owned(names)
        for name in names:
            self._signal(name, signal.SIGTERM)
        for name in names:
            self._wait_stopped(name)

    def remove(self, names: Sequence[str]) -> None:
        names = require_owned(names)
        self.files.remove(names)
        for name in names:
            if self._status(name).active_state in ("inactive", "failed"):
                self._state_path(name).unlink(missing_ok=True)

    def run_hook(self, command: HookCommand, *, between: Callable[[], None]) -> HookResult:
        if not is_hook_unit(command.unit):
            raise ValidationError(f"{command.unit!r} is not the name of a hook's unit")
        pid_file = self._run_dir() / f"{command.unit}.pid"
        self._kill_left_over(pid_file)
        files = write_hook_files(self.hook_dir, command)
        log_dir = self.state_dir / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            began = self.clock.now()
            with (log_dir / f"{command.unit}.log").open("ab") as log:
                process = subprocess.Popen(
                    hook_argv(command.script, str(files.script)),
                    env={"PATH": _HOOK_PATH, **command.environment},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, killed as a whole
                )
            pid_file.write_text(f"{process.pid} {_start_time(process.pid)}")
            try:
                timed_out = self._wait_for_hook(process, command.timeout_seconds, began, between)
            except BaseException:
                # The agent stopped waiting (as if it had been killed): the hook runs on,
                # is reaped in the background, and is killed when the hook runs again.
                threading.Thread(target=process.wait, daemon=True).start()
                raise
            _kill_group(process.pid, signal.SIGKILL)  # what it left behind in its group
            pid_file.unlink(missing_ok=True)  # kept if the wait was abandoned: killed next time
            code = process.returncode
            result = "timeout" if timed_out else "success" if code == 0 else "exit-code"
            if code < 0 and not timed_out:
                result = "signal"
            return HookResult(
                unit=command.unit,
                result=result,
                exit_status=code if code >= 0 else None,
                duration_seconds=(self.clock.now() - began).total_seconds(),
            )
        finally:
            remove_hook_files(files)

    def _wait_for_hook(
        self,
        process: subprocess.Popen[bytes],
        timeout: int,
        began: datetime,
        between: Callable[[], None],
    ) -> bool:
        """Wait until the hook ends; stop it at its timeout. Whether it timed out."""
        timed_out = False
        stop_at = began + timedelta(seconds=timeout)
        while process.poll() is None:
            if not timed_out and self.clock.now() >= stop_at:
                timed_out = True
                _kill_group(process.pid, signal.SIGTERM)
                stop_at += timedelta(seconds=_HOOK_STOP_GRACE)
            elif timed_out and self.clock.now() >= stop_at:
                _kill_group(process.pid, signal.SIGKILL)
            between()
            self.clock.sleep(min(self.poll_interval * 5, 0.1))
        return timed_out

    def _kill_left_over(self, pid_file: Path) -> None:
        """Kill the process group of a run of this hook that a crashed agent left (the
        group of the process with the recorded pid and start time: not a reused pid)."""
        try:
            pid, began = pid_file.read_text().split()
        except (FileNotFoundError, ValueError):
            return
        if _start_time(int(pid)) == began:
            _kill_group(int(pid), signal.SIGKILL)
        pid_file.unlink(missing_ok=True)

    # Inside.

    def _run_dir(self) -> Path:
        directory = self.state_dir / "run"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _state_path(self, name: str) -> Path:
        return self._run_dir() / f"{name}.json"

    def _state(self, name: str) -> dict[str, Any]:
        return read_state(self._state_path(name))

    def _status(self, name: str) -> UnitStatus:
        return unit_status(name, self._state(name))

    def _spec(self, name: str) -> ServiceSpec:
        if name.rpartition(".")[0].endswith("@") or not name.endswith(".service"):
            raise ValidationError(f"the process runtime starts only plain .service units: {name}")
        try:
            text = self.files.unit_path(name).read_text()
        except FileNotFoundError as exc:
            raise UnitFailedError(
                f"unit {name} is not installed; install its revision first",
                unit=name,
                result="not-found",
            ) from exc
        try:
            return ServiceSpec.parse(name, text)
        except (UnitSettingError, ValueError) as exc:
            raise UnitFailedError(
                f"the process runtime refused unit {name}: {exc}", unit=name, result="bad-setting"
            ) from exc

    def _launch(self, name: str) -> str:
        invocation = uuid.uuid4().hex
        log_dir = self.state_dir / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", supervisor.__name__, "supervise"]
        command += [str(self.files.unit_path(name))]
        command += [str(self._state_path(name)), str(log_dir), invocation]
        # The launcher forks the supervisor off and exits at once: nobody's zombie, and it
        # outlives this agent process as a systemd unit would.
        with (log_dir / f"{name}.log").open("ab") as log:
            launcher = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=False, timeout=60
            )
        if launcher.returncode != 0:
            raise ConfigurationError(
                f"could not launch the supervisor of {name}; see {log_dir / name}.log"
            )
        return invocation

    def _hint(self, name: str) -> str:
        return f"its output, unless the unit sends it elsewhere: {self.state_dir}/log/{name}.log"

    def _signal(self, name: str, number: int) -> None:
        state = self._state(name)
        if alive(state, "supervisor"):
            os.kill(state["supervisor"], number)  # it stops the unit and records the result
        elif alive(state, "main"):
            with suppress(ProcessLookupError):
                os.killpg(state["main_pid"], number)

    def _wait_stopped(self, name: str) -> None:
        state = self._state(name)
        if not state:
            return
        deadline = self.clock.now() + timedelta(seconds=float(state["stop_timeout"]) + 5.0)
        result = "success"
        while alive(state, "supervisor") or alive(state, "main"):
            if self.clock.now() >= deadline:
                self._signal(name, signal.SIGKILL)
                if alive(state, "main"):
                    with suppress(ProcessLookupError):
                        os.killpg(state["main_pid"], signal.SIGKILL)
                result = "timeout"
            self.clock.sleep(self.poll_interval)
            state = self._state(name)
        if state["active_state"] not in ("inactive", "failed"):
            write_state(self._state_path(name), state, "inactive", "dead", result)


def _kill_group(pid: int, number: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, number)


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat, field 22)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
    except (FileNotFoundError, IndexError):
        return "gone"
