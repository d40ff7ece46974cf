"""The unit runtime over systemd's D-Bus API (pydbus).

Production talks to the system manager on the system bus, with unit files in
/run/systemd/system and environment files in /run/flotilla/env (both tmpfs: decrypted
secrets never reach a disk, and a reboot leaves nothing half-installed). Development and
tests talk to a `systemd --user` manager at a given bus address.

Only units Flotilla owns (named by `flotilla.engine.units`) are ever started, stopped or
removed; any other name is refused with `ValidationError` before anything happens.

Waiting for systemd: a start or stop job is followed through its `JobRemoved` signal
(`adapters.systemd_bus`). For most service types the start job is "done" as soon as the
process is forked or exec'd, even if it exits a moment later, so `start` then settles the
units by the one rule and loop of the `UnitRuntime` port (`engine.activation.settle`):
each must be running well, and stay so for a short settle period. Waits use the injected
clock and are bounded. GLib and D-Bus errors become engine errors here. The unit and
environment files are `adapters.unit_files`, shared with the process runtime.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flotilla.adapters.hook_files import hook_dir_beside
from flotilla.adapters.systemd_bus import REFUSED_TO_LOAD, SYSTEMD, TRANSIENT_ERRORS, JobWatch
from flotilla.adapters.systemd_hooks import TransientHooks
from flotilla.adapters.unit_files import UnitFiles
from flotilla.engine.activation import settle, unit_failure
from flotilla.engine.clock import Clock, SystemClock
from flotilla.engine.errors import (
    ConfigurationError,
    FlotillaError,
    TransientError,
    UnitFailedError,
    ValidationError,
)
from flotilla.engine.ports import HookCommand, HookResult, UnitStatus
from flotilla.engine.units import is_owned, plan_installation, require_owned

SYSTEM_UNIT_DIR = Path("/run/systemd/system")
SYSTEM_ENVIRONMENT_DIR = Path("/run/flotilla/env")
_CLD_EXITED = 1  # ExecMainCode: the main process exited (rather than being killed)
# How to get the D-Bus bindings, in the words of the one line an agent that lacks them says.
BINDINGS_FIX = (
    "install the systemd extra, pip install 'flotilla-deploy[systemd]' (it builds PyGObject, "
    "which needs the distribution's GObject-introspection and cairo development packages: "
    "gcc pkg-config python3-dev libgirepository1.0-dev libcairo2-dev on Debian 12), or use "
    "the distribution's python3-gi and python3-pydbus in a virtualenv made with "
    "--system-site-packages"
)


def missing_bindings() -> str | None:
    """None when pydbus and PyGObject import; else why not (the ImportError's words)."""
    try:
        import pydbus  # noqa: F401
        from gi.repository import Gio, GLib  # noqa: F401
    except ImportError as exc:
        return str(exc) or type(exc).__name__
    return None


class SystemdRuntime:
    """`UnitRuntime` over systemd's D-Bus API.

    `bus_address` None means the system bus (production); otherwise e.g.
    "unix:path=$XDG_RUNTIME_DIR/bus" of a user manager, whose unit directory is then
    typically $XDG_RUNTIME_DIR/systemd/user.
    """

    def __init__(
        self,
        *,
        bus_address: str | None = None,
        unit_dir: Path = SYSTEM_UNIT_DIR,
        environment_dir: Path = SYSTEM_ENVIRONMENT_DIR,
        clock: Clock | None = None,
        job_timeout: float = 120.0,
        settle_seconds: float = 0.5,
        poll_interval: float = 0.02,
    ) -> None:
        self.bus_address = bus_address
        self.files = UnitFiles(Path(unit_dir), Path(environment_dir))
        self.hook_dir = hook_dir_beside(Path(environment_dir))
        self.clock: Clock = clock or SystemClock()
        self.job_timeout = job_timeout
        self.settle_seconds = settle_seconds
        self.poll_interval = poll_interval
        self._bus: Any = None
        self._manager: Any = None
        self._gi: Any = None  # (GLib, Gio) once connected

    @classmethod
    def connect(
        cls,
        *,
        bus_address: str | None = None,
        unit_dir: Path | None = None,
        env_dir: Path | None = None,
        clock: Clock | None = None,
    ) -> SystemdRuntime:
        """A runtime connected now, so a misconfigured agent fails at start, not mid-deploy.

        Without `unit_dir`: /run/systemd/system on the system bus, and
        $XDG_RUNTIME_DIR/systemd/user for a user manager's bus.
        """
        if unit_dir is None and bus_address is not None:
            runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
            if not runtime_dir:
                raise ConfigurationError(
                    "a user manager's unit directory is $XDG_RUNTIME_DIR/systemd/user, but "
                    "XDG_RUNTIME_DIR is not set: set it or give the unit directory"
                )
            unit_dir = Path(runtime_dir) / "systemd" / "user"
        runtime = cls(
            bus_address=bus_address,
            unit_dir=unit_dir or SYSTEM_UNIT_DIR,
            environment_dir=env_dir or SYSTEM_ENVIRONMENT_DIR,
            clock=clock,
        )
        runtime._connect()
        return runtime

    # The port.

    def owned_units(self) -> list[str]:
        with self._dbus("list units"):
            loaded = self._connect().ListUnitsByPatterns([], ["flotilla-*"])
        # A unit whose file is gone but which still runs (or failed) is still ours to stop.
        busy = {row[0] for row in loaded if is_owned(row[0]) and row[3] != "inactive"}
        return sorted(busy | set(self.files.installed()))

    def install(
        self,
        revision_id: str,
        units: Mapping[str, str],
        environments: Mapping[str, Mapping[str, str]],
        names: Mapping[str, str] | None = None,
    ) -> list[str]:
        planned = plan_installation(
            revision_id, units, environments, str(self.files.environment_dir), names
        )
        installed = [unit.installed for unit in planned]
        rewritten = self.files.write(planned)
        with self._dbus("reload"):
            # Also reload when nothing changed on disk but systemd has not seen it yet (an
            # agent that crashed between writing and reloading).
            if rewritten or any(self._stale(name) for name in installed):
                self._connect().Reload(timeout=int(self.job_timeout))
        return installed

    def start(self, names: Sequence[str]) -> None:
        names = _startable(require_owned(names))
        if not names:
            return
        with self._dbus("start units"):
            manager = self._connect()
            for name in names:  # refuse a broken revision before starting any of it
                self._require_loaded(name)
            kinds = {name: self._service_type(name) for name in names}
            with self._job_watch() as watch:
                jobs: dict[str, str] = {}
                for name in names:
                    try:
                        jobs[manager.StartUnit(name, "replace")] = name
                    except self._gi[0].Error as exc:
                        self._raise_refusal(name, exc)
                results = watch.wait(jobs, self._deadline(), "start")
            for job, name in jobs.items():
                if results[job] != "done":
                    raise unit_failure(
                        self._status(name), f"failed to start (job {results[job]})", _hint(name)
                    )
            # For most service types the job is "done" once the process is forked, even if
            # it exits a moment later: the settle period catches that.
            settle(
                names,
                lambda pending: [self._status(name) for name in pending],
                clock=self.clock,
                run_once=[name for name in names if kinds[name] == "oneshot"],
                hold=self.settle_seconds,
                settle_timeout=self.job_timeout,
                poll=self.poll_interval,
                hint=_hint,
            )

    def status(self, names: Sequence[str]) -> list[UnitStatus]:
        with self._dbus("read unit status"):
            return [self._status(name) for name in names]

    def stop(self, names: Sequence[str]) -> None:
        names = require_owned(names)
        with self._dbus("stop units"):
            manager = self._connect()
            targets = [instance for name in names for instance in self._instances(name)]
            with self._job_watch() as watch:
                jobs: dict[str, str] = {}
                for name in targets:
                    try:
                        jobs[manager.StopUnit(name, "replace")] = name
                    except self._gi[0].Error as exc:
                        if self._error_name(exc) != "org.freedesktop.systemd1.NoSuchUnit":
                            raise
                results = watch.wait(jobs, self._deadline(), "stop")
            for job, name in jobs.items():
                state = self._status(name)
                if state.active_state not in ("inactive", "failed"):
                    raise TransientError(
                        f"unit {name} did not stop (job {results[job]}, now "
                        f"{state.active_state}/{state.sub_state}); stopping again may help"
                    )

    def remove(self, names: Sequence[str]) -> None:
        names = require_owned(names)
        removed = self.files.remove(names)
        with self._dbus("remove units"):
            manager = self._connect()
            if removed:
                manager.Reload(timeout=int(self.job_timeout))
            for name in names:
                # A failed unit would otherwise stay loaded (and listed) until reset.
                try:
                    manager.ResetFailedUnit(name)
                except self._gi[0].Error as exc:
                    if self._error_name(exc) not in (
                        "org.freedesktop.systemd1.NoSuchUnit",
                        "org.freedesktop.DBus.Error.InvalidArgs",
                    ):
                        raise

    def run_hook(self, command: HookCommand, *, between: Callable[[], None]) -> HookResult:
        with self._dbus("run a hook"):
            self._connect()
            hooks = TransientHooks(self, self._bus, self._gi[0], self.hook_dir)
            return hooks.run(command, between=between)

    def close(self) -> None:
        """Close the bus connection; the next call opens a new one."""
        bus, self._bus, self._manager = self._bus, None, None
        if bus is not None:
            with suppress(Exception):
                bus.con.close_sync(None)

    # D-Bus plumbing.

    def _connect(self) -> Any:
        if self._manager is not None:
            return self._manager
        try:
            import pydbus
            from gi.repository import Gio, GLib
        except ImportError as exc:
            raise ConfigurationError(
                f"the systemd runtime needs pydbus and PyGObject ({exc}): {BINDINGS_FIX}"
            ) from exc
        self._gi = (GLib, Gio)
        with self._dbus("connect to systemd"):
            # A private connection even to the system bus: the shared one that
            # pydbus.SystemBus() returns exits the whole process when the bus goes away.
            address = self.bus_address or Gio.dbus_address_get_for_bus_sync(Gio.BusType.SYSTEM)
            bus = pydbus.connect(address)
            manager = bus.get(SYSTEMD, "/org/freedesktop/systemd1")
            manager.Subscribe()  # else systemd sends no JobRemoved signals to this client
        self._bus, self._manager = bus, manager
        return manager

    @contextmanager
    def _dbus(self, action: str) -> Iterator[None]:
        """Translate GLib/D-Bus errors into engine errors; drop a connection that broke."""
        try:
            yield
        except FlotillaError:
            raise
        except Exception as exc:
            if self._gi is None or not isinstance(exc, self._gi[0].Error):
                raise
            name = self._error_name(exc)
            where = self.bus_address or "the system bus"
            message = f"systemd could not {action} ({where}): {exc.message}"
            gio = self._gi[1]
            closed = exc.matches(gio.io_error_quark(), gio.IOErrorEnum.CLOSED)
            if name in TRANSIENT_ERRORS or closed or name is None:
                self.close()
                raise TransientError(message) from exc
            if name in (
                "org.freedesktop.DBus.Error.AccessDenied",
                "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
            ):
                raise ConfigurationError(message + "; run the agent as root") from exc
            raise FlotillaError(message) from exc

    def _error_name(self, exc: Any) -> str | None:
        name: str | None = self._gi[1].DBusError.get_remote_error(exc)
        return name

    def _properties(self, name: str, interface: str = "Unit") -> dict[str, Any]:
        path = self._connect().LoadUnit(name)
        glib = self._gi[0]
        reply = self._bus.con.call_sync(
            SYSTEMD,
            path,
            "org.freedesktop.DBus.Properties",
            "GetAll",
            glib.Variant("(s)", (f"{SYSTEMD}.{interface}",)),
            glib.VariantType.new("(a{sv})"),
            0,
            int(self.job_timeout * 1000),
            None,
        )
        properties: dict[str, Any] = reply.unpack()[0]
        return properties

    def _status(self, name: str) -> UnitStatus:
        if name.rpartition(".")[0].endswith("@"):  # a template is never active itself
            return UnitStatus(name, "inactive", "dead", "success")
        unit = self._properties(name)
        load_state = unit["LoadState"]
        kind = name.rsplit(".", 1)[-1].capitalize()
        typed = self._properties(name, kind) if load_state == "loaded" else {}
        if load_state not in ("loaded", "not-found"):
            typed["Result"] = load_state  # bad-setting, error, masked: why it cannot run
        exit_status = None
        if typed.get("ExecMainCode") == _CLD_EXITED:
            exit_status = int(typed["ExecMainStatus"])
        return UnitStatus(
            name=name,
            active_state=unit["ActiveState"],
            sub_state=unit["SubState"],
            result=typed.get("Result", "success"),
            exit_status=exit_status,
            main_pid=int(typed.get("MainPID") or 0) or None,
        )

    def _service_type(self, name: str) -> str:
        if not name.endswith(".service"):
            return name.rsplit(".", 1)[-1]
        kind: str = self._properties(name, "Service")["Type"]
        return kind

    def _stale(self, name: str) -> bool:
        if name.rpartition(".")[0].endswith("@"):
            return False
        unit = self._properties(name)
        return bool(unit["NeedDaemonReload"]) or unit["LoadState"] == "not-found"

    def _instances(self, name: str) -> list[str]:
        """A template stands for its loaded instances; any other name for itself."""
        stem, _, suffix = name.rpartition(".")
        if not stem.endswith("@"):
            return [name]
        loaded = self._connect().ListUnitsByPatterns([], [f"{stem}*.{suffix}"])
        return [row[0] for row in loaded]

    def _job_watch(self) -> JobWatch:
        manager = self._connect()
        return JobWatch(manager, self._bus, self._gi[0], self.clock, self.poll_interval)

    def _deadline(self) -> datetime:
        return self.clock.now() + timedelta(seconds=self.job_timeout)

    # Deciding whether a start worked.

    def _require_loaded(self, name: str) -> None:
        unit = self._properties(name)
        if unit["LoadState"] != "loaded":
            reason = unit["LoadError"][1] or f"its unit file is {unit['LoadState']}"
            raise UnitFailedError(
                f"systemd refused to load unit {name}: {reason} (LoadState "
                f"{unit['LoadState']}); check the unit file of the revision",
                unit=name,
                result=unit["LoadState"],
            )

    def _raise_refusal(self, name: str, exc: Any) -> None:
        load_state = REFUSED_TO_LOAD.get(self._error_name(exc) or "")
        if load_state is None:
            raise exc
        raise UnitFailedError(
            f"systemd refused to start unit {name}: {exc.message}",
            unit=name,
            result=load_state,
        ) from exc


def _startable(names: list[str]) -> list[str]:
    templates = [name for name in names if name.rpartition(".")[0].endswith("@")]
    if templates:
        raise ValidationError(
            f"cannot start template unit(s) {', '.join(templates)} without an instance; "
            "start an instance such as 'name@1.service' or a socket that spawns them"
        )
    return names


def _hint(name: str) -> str:
    return f"see `systemctl status {name}`"
