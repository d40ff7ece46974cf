"""The supervisor: one detached process per started unit of the process runtime.

Run as `python -m flotilla.adapters.process_units.supervisor supervise UNIT STATE LOGDIR
INVOCATION` by `ProcessRuntime` (adapters/process_runtime.py). The launcher forks and
exits at once; the supervisor starts a new session, runs the unit's ExecStart= commands
as children in their own process groups, records the unit's state in the state file
(`process_units.state`) in systemd's words, and on SIGTERM stops the unit: SIGTERM to its
process group, SIGKILL after TimeoutStopSec=.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from flotilla.adapters.process_units.spec import ServiceSpec, UnitSettingError, expand_variables
from flotilla.adapters.process_units.state import process_token, write_state
from flotilla.engine.units import parse_environment_file

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_EXIT_CHDIR, _EXIT_EXEC, _EXIT_STDOUT = 200, 203, 209  # systemd's exit codes for these


def _child_environment(spec: ServiceSpec, invocation: str) -> dict[str, str]:
    environment = {"PATH": DEFAULT_PATH, "INVOCATION_ID": invocation, **spec.environment}
    # As in systemd, files override Environment=, and later files override earlier ones.
    for entry in spec.environment_files:
        path = entry.removeprefix("-")
        try:
            # Bytes, not text mode: universal newlines would turn a quoted "\r" into "\n".
            environment.update(parse_environment_file(Path(path).read_bytes().decode()))
        except FileNotFoundError:
            if not entry.startswith("-"):
                raise
    return environment


def _output(setting: str, default: Path, inherit: int | None) -> int | None:
    """A file descriptor for StandardOutput=/StandardError=, or the inherited one."""
    kind, _, path = setting.partition(":")
    flags = {"append": os.O_APPEND, "file": 0, "truncate": os.O_TRUNC}
    if kind in flags and path:
        return os.open(path, os.O_WRONLY | os.O_CREAT | flags[kind], 0o644)
    if kind == "null":
        return os.open(os.devnull, os.O_WRONLY)
    if kind == "inherit" and inherit is not None:
        return inherit
    return os.open(default, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def supervise(unit_path: Path, state_path: Path, log_dir: Path, invocation: str) -> int:
    """Run one unit's commands to their end, recording its state in systemd's words."""
    stopping: list[float] = []  # when a stop was asked for (SIGTERM)
    signal.signal(signal.SIGTERM, lambda _n, _f: stopping.append(time.monotonic()))
    os.umask(0o022)
    me = os.getpid()
    state = {"invocation": invocation, "supervisor": me, "supervisor_token": process_token(me)}
    state |= {"main_pid": None, "main_token": None, "stop_timeout": 10.0}
    state = write_state(state_path, state, "activating", "start", "success")
    try:
        spec = ServiceSpec.parse(unit_path.name, unit_path.read_text())
        state["stop_timeout"] = spec.stop_timeout
        environment = _child_environment(spec, invocation)
    except (OSError, UnitSettingError, ValueError):
        write_state(state_path, state, "failed", "failed", "resources")
        return 1
    try:
        stdout = _output(spec.stdout, log_dir / f"{spec.name}.log", None)
        stderr = _output(spec.stderr, log_dir / f"{spec.name}.log", stdout)
    except OSError:
        write_state(state_path, state, "failed", "failed", "exit-code", _EXIT_STDOUT)
        return 1
    directory = (spec.working_directory or "/").removeprefix("-")
    if not os.path.isdir(directory):
        if not (spec.working_directory or "").startswith("-"):
            write_state(state_path, state, "failed", "failed", "exit-code", _EXIT_CHDIR)
            return 1
        directory = "/"
    for prefixes, words in spec.commands:
        if stopping:
            break
        argv = words if ":" in prefixes else expand_variables(words, environment)
        executable = argv[0]
        if "@" in prefixes:
            argv = argv[1:]
        if "/" not in executable:
            executable = shutil.which(executable, path=DEFAULT_PATH) or executable
        try:
            child = subprocess.Popen(
                argv,
                executable=executable,
                env=environment,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError:
            write_state(state_path, state, "failed", "failed", "exit-code", _EXIT_EXEC)
            return 1
        state |= {"main_pid": child.pid, "main_token": process_token(child.pid)}
        running = ("activating", "start") if spec.kind == "oneshot" else ("active", "running")
        state = write_state(state_path, state, *running, "success")
        code, killed = _wait(child, stopping, spec.stop_timeout)
        if stopping:
            clean = code in (0, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP, -signal.SIGPIPE)
            result = "timeout" if killed else ("success" if clean else "exit-code")
            write_state(state_path, state, "inactive", "dead", result)
            return 0
        if code != 0 and "-" not in prefixes:
            result, status = ("exit-code", code) if code > 0 else ("signal", None)
            write_state(state_path, state, "failed", "failed", result, status)
            return 0
    if spec.kind == "oneshot" and spec.remain_after_exit and not stopping:
        write_state(state_path, state, "active", "exited", "success")
    else:
        write_state(state_path, state, "inactive", "dead", "success")
    return 0


def _wait(
    child: subprocess.Popen[bytes], stopping: list[float], timeout: float
) -> tuple[int, bool]:
    """The child's return code, and whether it had to be killed after the stop timeout."""
    signalled = killed = False
    while True:
        try:
            return child.wait(timeout=0.05), killed
        except subprocess.TimeoutExpired:
            pass
        if stopping and not signalled:
            signalled = True
            with suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
        if stopping and not killed and time.monotonic() - stopping[0] > timeout:
            killed = True
            with suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)


def main(arguments: Sequence[str]) -> int:
    if len(arguments) != 6 or arguments[1] != "supervise":
        print(f"usage: python -m {__name__} supervise UNIT STATE LOGDIR INVOCATION")
        return 2
    if os.fork() > 0:
        return 0  # the launcher: the agent waits only for this
    os.setsid()
    return supervise(Path(arguments[2]), Path(arguments[3]), Path(arguments[4]), arguments[5])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
