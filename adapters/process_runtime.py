"""A unit runtime for machines without systemd (the demo on a laptop): plain processes.

Each `.service` unit's `ExecStart=` runs as a child process in its own session, so it
outlives the agent, as a systemd unit would; pid files (with the process start time,
against pid reuse) let a restarted agent find and stop it. Honest about what it does
NOT do: no cgroups (a unit that forks and exits escapes it), no restart policies, no
sandboxing, no dependencies ordering beyond the order given, and no `.socket` or
`.timer` units (refused with a clear error: use systemd for those).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from flotilla.engine import units as unit_names
from flotilla.engine.clock import Clock, SystemClock
from flotilla.engine.errors import UnitFailedError, ValidationError
from flotilla.engine.ports import UnitStatus
from flotilla.engine.secure_files import write_private_file


class ProcessRuntime:
    """`UnitRuntime` with processes; state lives under `state_dir`."""

    def __init__(
        self,
        state_dir: Path,
        clock: Clock | None = None,
        stop_timeout: float = 5.0,
        early_exit_window: float = 0.3,
    ):
        self._units = state_dir / "units"
        self._env = state_dir / "env"
        self._pids = state_dir / "pids"
        self._logs = state_dir / "logs"
        for folder in (self._units, self._pids, self._logs):
            folder.mkdir(parents=True, exist_ok=True)
        self._env.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._env, 0o700)
        self._clock = clock or SystemClock()
        self._stop_timeout = stop_timeout
        self._early_exit_window = early_exit_window
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # --- files -----------------------------------------------------------------------

    def owned_units(self) -> list[str]:
        return sorted(p.name for p in self._units.iterdir() if unit_names.is_owned(p.name))

    def install(
        self,
        revision_id: str,
        units: Mapping[str, str],
        environments: Mapping[str, Mapping[str, str]],
    ) -> list[str]:
        unsupported = [name for name in units if not name.endswith(".service")]
        if unsupported:
            raise ValidationError(
                f"the process runtime runs .service units only, not {', '.join(unsupported)}; "
                "run the agent with systemd for sockets and timers"
            )
        siblings = {name: unit_names.installed_name(name, revision_id) for name in units}
        for name, text in units.items():
            installed = siblings[name]
            env_file = None
            if environments.get(name):
                env_path = self._env / f"{installed}.env"
                write_private_file(env_path, unit_names.render_environment_file(environments[name]))
                env_file = str(env_path)
            rendered = unit_names.render_unit(text, revision_id, siblings, env_file)
            (self._units / installed).write_text(rendered, encoding="utf-8")
        return [siblings[name] for name in units]

    def remove(self, names: Sequence[str]) -> None:
        self._require_owned(names)
        self.stop(names)
        for name in names:
            (self._units / name).unlink(missing_ok=True)
            (self._env / f"{name}.env").unlink(missing_ok=True)

    # --- processes -------------------------------------------------------------------

    def start(self, names: Sequence[str]) -> None:
        self._require_owned(names)
        for name in names:
            if self._alive(name):
                continue
            command, environment, workdir = self._parse(name)
            log = open(self._logs / f"{name}.log", "ab")  # noqa: SIM115 -- the child keeps it
            try:
                child = subprocess.Popen(
                    command,
                    env=environment,
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise UnitFailedError(
                    f"unit {name} did not start: {exc.strerror}", unit=name, result="exec"
                ) from exc
            finally:
                log.close()
            self._children[name] = child
            (self._pids / name).write_text(f"{child.pid} {_start_time(child.pid)}\n")
            self._catch_early_exit(name, child)

    def _catch_early_exit(self, name: str, child: subprocess.Popen[bytes]) -> None:
        """A command that exits within a moment did not start (like systemd's Type=exec)."""
        waited = 0.0
        while waited < self._early_exit_window and child.poll() is None:
            self._clock.sleep(0.02)
            waited += 0.02
        code = child.poll()
        if code is not None and code != 0:
            raise UnitFailedError(
                f"unit {name} exited at once with status {code}",
                unit=name,
                result="exit-code" if code > 0 else "signal",
                exit_status=code,
            )

    def status(self, names: Sequence[str]) -> list[UnitStatus]:
        return [self._status(name) for name in names]

    def _status(self, name: str) -> UnitStatus:
        if self._alive(name):
            return UnitStatus(name, "active", "running", "success")
        if not (self._pids / name).exists():
            return UnitStatus(name, "inactive", "dead", "success")
        child = self._children.get(name)
        code = None if child is None else child.poll()
        result = "exit-code" if code is None or code > 0 else ("signal" if code < 0 else "success")
        return UnitStatus(name, "failed", "failed", result, exit_status=code)

    def stop(self, names: Sequence[str]) -> None:
        self._require_owned(names)
        for name in names:
            pid = self._pid(name)
            if pid is not None and self._alive(name):
                _signal_group(pid, signal.SIGTERM)
                waited = 0.0
                while self._alive(name) and waited < self._stop_timeout:
                    self._clock.sleep(0.05)
                    waited += 0.05
                if self._alive(name):
                    _signal_group(pid, signal.SIGKILL)
            child = self._children.pop(name, None)
            if child is not None:
                child.wait()
            (self._pids / name).unlink(missing_ok=True)

    # --- helpers ---------------------------------------------------------------------

    def _require_owned(self, names: Sequence[str]) -> None:
        foreign = [name for name in names if not unit_names.is_owned(name)]
        if foreign:
            raise ValidationError(
                f"Flotilla does not own {', '.join(foreign)}; it never touches them"
            )

    def _pid(self, name: str) -> int | None:
        try:
            pid_text, started = (self._pids / name).read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        return int(pid_text) if _start_time(int(pid_text)) == started else None

    def _alive(self, name: str) -> bool:
        child = self._children.get(name)
        if child is not None:
            return child.poll() is None
        pid = self._pid(name)  # started by an earlier agent process
        return pid is not None and _running(pid)

    def _parse(self, name: str) -> tuple[list[str], dict[str, str], str | None]:
        command: list[str] = []
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        workdir = None
        for line in (self._units / name).read_text(encoding="utf-8").splitlines():
            key, _, value = line.strip().partition("=")
            if key == "ExecStart" and not command:
                command = shlex.split(value.lstrip("-@+!:"))
            elif key == "Environment":
                for pair in shlex.split(value):
                    variable, _, setting = pair.partition("=")
                    environment[variable] = setting
            elif key == "EnvironmentFile":
                environment.update(_read_environment_file(Path(value.lstrip("-"))))
            elif key == "WorkingDirectory":
                workdir = value
        if not command:
            raise UnitFailedError(f"unit {name} has no ExecStart=", unit=name, result="resources")
        return command, environment, workdir


def _read_environment_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in shlex.split(path.read_text(encoding="utf-8"), comments=True):
        variable, _, value = pair.partition("=")
        values[variable] = value
    return values


def _start_time(pid: int) -> str:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return "gone"
    return fields[19]  # field 22 of stat: start time in clock ticks since boot


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in {"Z", "X"}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
