"""ProcessRuntime: the unit runtime for machines without systemd (the demo on a laptop).

Each started `.service` unit gets a small supervisor process (this module, run with
`python -m flotilla.adapters.process_runtime supervise …`) that detaches from the agent,
runs the unit's ExecStart= as a child in its own process group, and records in a state
file (in the state directory) the pids, ActiveState, SubState, Result and exit status in
systemd's words. A restarted agent reads those files to find, report and stop its units.

It reads: Type= (simple, exec, idle, oneshot with RemainAfterExit=), ExecStart= (quoting,
C escapes, the prefixes `-` `@` `:`, `$VAR` and `${VAR}`, the specifiers %% %n %N %p %i),
Environment=, EnvironmentFile= (systemd's syntax, `-` for optional), WorkingDirectory=,
StandardOutput=/StandardError= (`append:`, `file:`, `truncate:`, `null`; anything else
goes to <state>/log/<unit>.log), TimeoutStopSec= (in seconds; 10 s when not given).

What it does not do, honestly:
- no cgroups: stop signals the process group, so a process that leaves it escapes;
- no socket or timer activation: `.socket` and `.timer` units, and templates, are refused
  at install (ConfigurationError); Type=forking, notify and dbus are refused at start;
- no dependencies or ordering: After=, Requires=, Wants= … are kept in the installed
  file (renamed like systemd's) but not acted on; each named unit is started on its own;
- no restart policies (Restart= is ignored), no SuccessExitStatus=, no ExecStop=;
- no sandboxing, no User=/Group=: everything runs as the agent's user;
- no journal: output goes to files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from flotilla.adapters.systemd import UnitFiles, start_failure, startup_failed, write_atomically
from flotilla.engine.clock import Clock, SystemClock
from flotilla.engine.errors import ConfigurationError, UnitFailedError, ValidationError
from flotilla.engine.ports import UnitStatus
from flotilla.engine.units import (
    PREFIX,
    parse_environment_file,
    plan_installation,
    require_owned,
)
from flotilla.engine.units import unit_settings as parse_settings

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_EXIT_CHDIR, _EXIT_EXEC, _EXIT_STDOUT = 200, 203, 209  # systemd's exit codes for these
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "s": " "}


class UnitSettingError(Exception):
    """A setting this runtime cannot carry out (the unit would not start as written)."""


@dataclass
class ServiceSpec:
    """What the supervisor needs from a unit file; secrets are read only at start."""

    name: str
    kind: str = "simple"
    commands: list[tuple[str, list[str]]] = field(default_factory=list)  # (prefixes, words)
    environment: dict[str, str] = field(default_factory=dict)
    environment_files: list[str] = field(default_factory=list)
    working_directory: str | None = None
    stdout: str = "journal"
    stderr: str = "inherit"
    remain_after_exit: bool = False
    stop_timeout: float = 10.0

    @classmethod
    def parse(cls, name: str, text: str) -> ServiceSpec:
        spec = cls(name)
        for section, key, value in parse_settings(text):
            if section == "Service":
                spec._take(key, value)
        if spec.kind in ("forking", "notify", "dbus"):
            raise UnitSettingError(f"Type={spec.kind} is not supported by the process runtime")
        if not spec.commands:
            raise UnitSettingError("the service has no ExecStart=")
        if len(spec.commands) > 1 and spec.kind != "oneshot":
            raise UnitSettingError("more than one ExecStart= is only allowed for Type=oneshot")
        return spec

    def _take(self, key: str, value: str) -> None:
        if key == "Type":
            self.kind = value
        elif key == "ExecStart":
            if not value:
                self.commands.clear()
                return
            prefixes = value[: len(value) - len(value.lstrip("-@:+!"))]
            words = [_specifiers(word, self.name) for word in _words(value[len(prefixes) :])]
            if not words:
                raise UnitSettingError("ExecStart= names no command")
            self.commands.append((prefixes, words))
        elif key == "Environment":
            if not value:
                self.environment.clear()
            for word in _words(value):
                variable, equals, setting = _specifiers(word, self.name).partition("=")
                if not equals:
                    raise UnitSettingError(f"Environment= assignment {variable!r} has no '='")
                self.environment[variable] = setting
        elif key == "EnvironmentFile":
            if value:
                self.environment_files.append(_specifiers(value, self.name))
            else:
                self.environment_files.clear()
        elif key == "WorkingDirectory":
            self.working_directory = _specifiers(value, self.name) or None
        elif key in ("StandardOutput", "StandardError"):
            output = _specifiers(value, self.name)
            setattr(self, "stdout" if key == "StandardOutput" else "stderr", output)
        elif key == "RemainAfterExit":
            self.remain_after_exit = value.lower() in ("1", "yes", "true", "on")
        elif key == "TimeoutStopSec" and re.fullmatch(r"\d+(\.\d+)?s?", value):
            self.stop_timeout = float(value.rstrip("s"))


def _words(text: str) -> list[str]:
    """Split like systemd's extract_first_word(EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE)."""
    words: list[str] = []
    word: list[str] | None = None
    quote: str | None = None
    index = 0
    while index < len(text):
        c = text[index]
        index += 1
        if quote is None and c in " \t\n":
            if word is not None:
                words.append("".join(word))
                word = None
            continue
        word = [] if word is None else word
        if c == "\\":
            if index >= len(text):
                raise UnitSettingError(f"trailing backslash in {text!r}")
            escaped, index = _unescape(text, index)
            word.append(escaped)
        elif quote is None and c in "\"'":
            quote = c
        elif c == quote:
            quote = None
        else:
            word.append(c)
    if quote is not None:
        raise UnitSettingError(f"unbalanced quotes in {text!r}")
    if word is not None:
        words.append("".join(word))
    return words


def _unescape(text: str, index: int) -> tuple[str, int]:
    c = text[index]
    if c in _ESCAPES:
        return _ESCAPES[c], index + 1
    for letter, digits, base in (("x", 2, 16), ("u", 4, 16), ("U", 8, 16)):
        if c == letter:
            return chr(int(text[index + 1 : index + 1 + digits], base)), index + 1 + digits
    if c in "01234567":
        return chr(int(text[index : index + 3], 8)), index + 3
    return c, index + 1  # \\ \" \' and anything else stand for themselves


def _specifiers(text: str, name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    prefix, _, instance = stem.partition("@")
    known = {"%": "%", "n": name, "N": stem, "p": prefix, "i": instance, "I": instance}

    def expand(match: re.Match[str]) -> str:
        if match.group(1) not in known:
            raise UnitSettingError(f"the process runtime does not expand %{match.group(1)}")
        return known[match.group(1)]

    return re.sub(r"%(.)", expand, text)


def _expand_variables(words: list[str], environment: Mapping[str, str]) -> list[str]:
    """$NAME as a word of its own splits at whitespace; ${NAME} is always one word."""
    expanded: list[str] = []
    for word in words:
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            expanded.extend(environment.get(whole.group(1), "").split())
            continue
        expanded.append(
            re.sub(
                r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                lambda m: "$" if m.group(0) == "$$" else environment.get(m.group(1), ""),
                word,
            )
        )
    return expanded


def _process_token(pid: int | None) -> str | None:
    """An identity of a live process (its start time), None if it is gone or a zombie."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:  # no /proc (macOS): existence is all we can tell
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return "?"
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


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
    ) -> list[str]:
        unsupported = sorted(u for u in units if not u.endswith(".service") or "@" in u)
        if unsupported:
            raise ConfigurationError(
                f"the process runtime cannot run {', '.join(unsupported)}: it has no socket or "
                "timer activation and no templates; deploy this revision where systemd runs"
            )
        planned = plan_installation(
            revision_id, units, environments, str(self.files.environment_dir)
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
        for name, invocation in launched.items():
            while not _started(self._state(name), invocation):
                if self.clock.now() >= deadline:
                    raise UnitFailedError(
                        f"unit {name} did not finish starting within {self.start_timeout} s",
                        unit=name,
                        result="timeout",
                    )
                self.clock.sleep(self.poll_interval)
            status = self._status(name)
            if startup_failed(status, specs[name].kind):
                raise start_failure(status, "exited right after it started", self._hint(name))
        self._settle([name for name, spec in specs.items() if spec.kind != "oneshot"])

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

    # Inside.

    def _run_dir(self) -> Path:
        directory = self.state_dir / "run"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _state_path(self, name: str) -> Path:
        return self._run_dir() / f"{name}.json"

    def _state(self, name: str) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self._state_path(name).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return state

    def _status(self, name: str) -> UnitStatus:
        state = self._state(name)
        if not state:
            return UnitStatus(name, "inactive", "dead", "success")
        lost = _expects_process(state) and not _alive(state, "supervisor")
        if lost and not _alive(state, "main"):  # the supervisor and its unit were killed
            return UnitStatus(name, "failed", "failed", "signal")
        return UnitStatus(
            name, state["active_state"], state["sub_state"], state["result"], state["exit_status"]
        )

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
        command = [sys.executable, "-m", __name__, "supervise", str(self.files.unit_path(name))]
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

    def _settle(self, names: Sequence[str]) -> None:
        until = self.clock.now() + timedelta(seconds=self.settle_seconds)
        while names:
            for name in names:
                status = self._status(name)
                if startup_failed(status, "service"):
                    raise start_failure(
                        status, f"stopped within {self.settle_seconds} s", self._hint(name)
                    )
            if self.clock.now() >= until:
                return
            self.clock.sleep(self.poll_interval)

    def _hint(self, name: str) -> str:
        return f"its output, unless the unit sends it elsewhere: {self.state_dir}/log/{name}.log"

    def _signal(self, name: str, number: int) -> None:
        state = self._state(name)
        if _alive(state, "supervisor"):
            os.kill(state["supervisor"], number)  # it stops the unit and records the result
        elif _alive(state, "main"):
            with suppress(ProcessLookupError):
                os.killpg(state["main_pid"], number)

    def _wait_stopped(self, name: str) -> None:
        state = self._state(name)
        if not state:
            return
        deadline = self.clock.now() + timedelta(seconds=float(state["stop_timeout"]) + 5.0)
        result = "success"
        while _alive(state, "supervisor") or _alive(state, "main"):
            if self.clock.now() >= deadline:
                self._signal(name, signal.SIGKILL)
                if _alive(state, "main"):
                    with suppress(ProcessLookupError):
                        os.killpg(state["main_pid"], signal.SIGKILL)
                result = "timeout"
            self.clock.sleep(self.poll_interval)
            state = self._state(name)
        if state["active_state"] not in ("inactive", "failed"):
            _write_state(self._state_path(name), state, "inactive", "dead", result)


def _started(state: Mapping[str, Any], invocation: str) -> bool:
    """Whether the supervisor of this invocation has got past starting (or died trying)."""
    if state.get("invocation") != invocation:
        return False
    return state["active_state"] != "activating" or not _alive(state, "supervisor")


def _alive(state: Mapping[str, Any], role: str) -> bool:
    pid, token = (
        state.get("supervisor" if role == "supervisor" else "main_pid"),
        state.get(f"{role}_token"),
    )
    return pid is not None and token is not None and _process_token(pid) == token


def _expects_process(state: Mapping[str, Any]) -> bool:
    return state["active_state"] in ("activating", "active", "deactivating") and (
        state["sub_state"] != "exited"
    )


def _write_state(
    path: Path,
    state: Mapping[str, Any],
    active: str,
    sub: str,
    result: str,
    exit_status: int | None = None,
) -> dict[str, Any]:
    new = {**state, "active_state": active, "sub_state": sub, "result": result}
    new["exit_status"] = exit_status
    write_atomically(path, json.dumps(new).encode(), 0o600)
    return new


# The supervisor: one process per started unit, detached from the agent.


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
    state = {"invocation": invocation, "supervisor": me, "supervisor_token": _process_token(me)}
    state |= {"main_pid": None, "main_token": None, "stop_timeout": 10.0}
    state = _write_state(state_path, state, "activating", "start", "success")
    try:
        spec = ServiceSpec.parse(unit_path.name, unit_path.read_text())
        state["stop_timeout"] = spec.stop_timeout
        environment = _child_environment(spec, invocation)
    except (OSError, UnitSettingError, ValueError):
        _write_state(state_path, state, "failed", "failed", "resources")
        return 1
    try:
        stdout = _output(spec.stdout, log_dir / f"{spec.name}.log", None)
        stderr = _output(spec.stderr, log_dir / f"{spec.name}.log", stdout)
    except OSError:
        _write_state(state_path, state, "failed", "failed", "exit-code", _EXIT_STDOUT)
        return 1
    directory = (spec.working_directory or "/").removeprefix("-")
    if not os.path.isdir(directory):
        if not (spec.working_directory or "").startswith("-"):
            _write_state(state_path, state, "failed", "failed", "exit-code", _EXIT_CHDIR)
            return 1
        directory = "/"
    for prefixes, words in spec.commands:
        if stopping:
            break
        argv = words if ":" in prefixes else _expand_variables(words, environment)
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
            _write_state(state_path, state, "failed", "failed", "exit-code", _EXIT_EXEC)
            return 1
        state |= {"main_pid": child.pid, "main_token": _process_token(child.pid)}
        running = ("activating", "start") if spec.kind == "oneshot" else ("active", "running")
        state = _write_state(state_path, state, *running, "success")
        code, killed = _wait(child, stopping, spec.stop_timeout)
        if stopping:
            clean = code in (0, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP, -signal.SIGPIPE)
            result = "timeout" if killed else ("success" if clean else "exit-code")
            _write_state(state_path, state, "inactive", "dead", result)
            return 0
        if code != 0 and "-" not in prefixes:
            result, status = ("exit-code", code) if code > 0 else ("signal", None)
            _write_state(state_path, state, "failed", "failed", result, status)
            return 0
    if spec.kind == "oneshot" and spec.remain_after_exit and not stopping:
        _write_state(state_path, state, "active", "exited", "success")
    else:
        _write_state(state_path, state, "inactive", "dead", "success")
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
