"""Lifecycle hooks as transient systemd units (StartTransientUnit), for `SystemdRuntime`.

A hook runs as `Type=oneshot` with `RemainAfterExit=yes`: its start job lasts as long as
the script, systemd itself stops it at `TimeoutStartSec=` (the hook's timeout; SIGTERM,
then SIGKILL after `TimeoutStopSec=`), even when the agent is gone, and once it ended the
unit stays loaded (active/exited, or failed) until its result has been read; then it is
stopped and reset, and systemd unloads it. The script and its environment are files
(adapters/hook_files.py): `EnvironmentFiles=` points at the root-only one, so no secret is
in a unit property (readable by any local user over D-Bus) or on a command line. Output
goes to the journal, under the hook unit's name (`journalctl -u flotilla-hook-…`).

A unit of the same name still loaded (a run left by an agent that crashed mid-hook) is
stopped and reset first: running a hook again starts it afresh.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from flotilla.adapters.hook_files import HookFiles, remove_hook_files, write_hook_files
from flotilla.engine.errors import TransientError, ValidationError
from flotilla.engine.hooks import hook_argv, is_hook_unit
from flotilla.engine.ports import HookCommand, HookResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from flotilla.adapters.systemd import SystemdRuntime

_CLD_EXITED: Final = 1  # ExecMainCode: the main process exited (rather than being killed)
# After its timeout a hook gets SIGTERM, and SIGKILL this much later.
STOP_GRACE_SECONDS: Final = 10
_POLL_SECONDS: Final = 0.1
_GONE = ("org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.DBus.Error.InvalidArgs")
_USEC = 1_000_000


class TransientHooks:
    """Runs hooks through one connected `SystemdRuntime` (its bus, clock and errors)."""

    def __init__(self, runtime: SystemdRuntime, bus: Any, glib: Any, hook_dir: Path) -> None:
        self.runtime, self.bus, self.glib, self.hook_dir = runtime, bus, glib, hook_dir
        self.manager = runtime._connect()

    def run(
        self,
        command: HookCommand,
        *,
        between: Callable[[], None],
    ) -> HookResult:
        if not is_hook_unit(command.unit):
            raise ValidationError(f"{command.unit!r} is not the name of a hook's unit")
        self._clear(command.unit, between)
        files = write_hook_files(self.hook_dir, command)
        try:
            clock = self.runtime.clock
            began = clock.now()
            self._start(command, self._properties(command, files))
            # The hook's own timeout is systemd's; this bound only guards against a
            # manager that never reports the end.
            bound = command.timeout_seconds + STOP_GRACE_SECONDS + self.runtime.job_timeout
            deadline = began + timedelta(seconds=bound)
            unit = self.runtime._properties(command.unit)
            # Until its start job is gone (queued, the unit is still inactive) and it has
            # left activating (a oneshot runs its script there) and deactivating.
            while unit["Job"][0] != 0 or unit["ActiveState"] in ("activating", "deactivating"):
                if clock.now() >= deadline:
                    raise TransientError(
                        f"systemd did not end hook unit {command.unit} within {bound} s of "
                        "its start; running the hook again stops it first"
                    )
                between()
                clock.sleep(_POLL_SECONDS)
                unit = self.runtime._properties(command.unit)
            ended = clock.now()
            service = self.runtime._properties(command.unit, "Service")
            result = HookResult(
                unit=command.unit,
                result=str(service["Result"]),
                exit_status=int(service["ExecMainStatus"])
                if service["ExecMainCode"] == _CLD_EXITED
                else None,
                duration_seconds=_duration(service) or (ended - began).total_seconds(),
            )
            self._clear(command.unit, between)
            return result
        finally:
            remove_hook_files(files)

    def _properties(self, command: HookCommand, files: HookFiles) -> list[tuple[str, Any]]:
        variant = self.glib.Variant
        argv = hook_argv(command.script, str(files.script))
        return [
            ("Description", variant("s", f"Flotilla lifecycle hook {command.unit}")),
            ("Type", variant("s", "oneshot")),
            ("RemainAfterExit", variant("b", True)),
            ("ExecStart", variant("a(sasb)", [(argv[0], argv, False)])),
            ("EnvironmentFiles", variant("a(sb)", [(str(files.environment), False)])),
            ("TimeoutStartUSec", variant("t", command.timeout_seconds * _USEC)),
            ("TimeoutStopUSec", variant("t", STOP_GRACE_SECONDS * _USEC)),
            # The journal, explicitly: a hook's output never goes anywhere an agent reads.
            ("StandardOutput", variant("s", "journal")),
            ("StandardError", variant("s", "journal")),
            ("SyslogIdentifier", variant("s", command.unit.removesuffix(".service"))),
        ]

    def _start(self, command: HookCommand, properties: list[tuple[str, Any]]) -> None:
        clock = self.runtime.clock
        deadline = clock.now() + timedelta(seconds=self.runtime.job_timeout)
        while True:
            try:
                self.manager.StartTransientUnit(command.unit, "fail", properties, [])
                return
            except self.glib.Error as exc:
                if self.runtime._error_name(exc) != "org.freedesktop.systemd1.UnitExists":
                    raise
                # The run cleared just before is stopped but not unloaded yet.
                if clock.now() >= deadline:
                    raise TransientError(
                        f"hook unit {command.unit} stayed loaded; running the hook again "
                        "starts it afresh"
                    ) from exc
                clock.sleep(_POLL_SECONDS)

    def _clear(self, unit: str, between: Callable[[], None]) -> None:
        """Stop and reset a loaded unit of this name (a finished run, or a crashed agent's
        run that may still be going), and wait until it is inactive (systemd then unloads
        it)."""
        clock = self.runtime.clock
        deadline = clock.now() + timedelta(seconds=STOP_GRACE_SECONDS + self.runtime.job_timeout)
        while self._loaded(unit):
            state = self.runtime._properties(unit)["ActiveState"]
            if state == "inactive":
                return
            try:
                if state in ("active", "activating", "reloading"):
                    self.manager.StopUnit(unit, "replace")
                elif state == "failed":
                    self.manager.ResetFailedUnit(unit)
            except self.glib.Error as exc:
                if self.runtime._error_name(exc) not in _GONE:
                    raise
            if clock.now() >= deadline:
                raise TransientError(f"hook unit {unit} did not stop; running the hook again may")
            between()
            clock.sleep(_POLL_SECONDS)

    def _loaded(self, unit: str) -> bool:
        try:
            self.manager.GetUnit(unit)
        except self.glib.Error as exc:
            if self.runtime._error_name(exc) in _GONE:
                return False
            raise
        return True


def _duration(service: dict[str, Any]) -> float | None:
    """How long the hook's process ran, by systemd's monotonic clock, if it says."""
    start = int(service.get("ExecMainStartTimestampMonotonic") or 0)
    end = int(service.get("ExecMainExitTimestampMonotonic") or 0)
    return (end - start) / _USEC if start and end >= start else None
