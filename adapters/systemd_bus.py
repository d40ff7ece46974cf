"""systemd's D-Bus API as the systemd runtime needs it: error names, and following jobs.

The D-Bus errors that mean "try again" and those that mean systemd refused to load a unit
are named here. A job is followed through the `JobRemoved` signal of the jobs one call
queued.

`JobRemoved` arrives only after `Manager.Subscribe()` and only while a GLib main context
is iterated: the watch subscribes on a private context and iterates it while it waits. A
job that is gone although its signal never came counts as done (the caller then judges
the unit by its state). Waits use the injected clock and are bounded by a deadline.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

from flotilla.engine.clock import Clock
from flotilla.engine.errors import UnitFailedError

SYSTEMD = "org.freedesktop.systemd1"
# D-Bus errors after which the same call may succeed (the connection is then reopened).
TRANSIENT_ERRORS = {
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Timeout",
    "org.freedesktop.DBus.Error.TimedOut",
    "org.freedesktop.DBus.Error.Disconnected",
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.LimitsExceeded",
    "org.freedesktop.systemd1.TransactionIsDestructive",
    "org.freedesktop.systemd1.ShuttingDown",
}
# Errors of StartUnit that mean the unit cannot load, and the LoadState they stand for.
REFUSED_TO_LOAD = {
    "org.freedesktop.systemd1.BadUnitSetting": "bad-setting",
    "org.freedesktop.systemd1.LoadFailed": "error",
    "org.freedesktop.systemd1.UnitMasked": "masked",
    "org.freedesktop.systemd1.NoSuchUnit": "not-found",
}


class JobWatch:
    """Collects `JobRemoved` signals on a private GLib main context while jobs run."""

    def __init__(self, manager: Any, bus: Any, glib: Any, clock: Clock, poll: float) -> None:
        self.manager, self.bus, self.glib = manager, bus, glib
        self.clock, self.poll = clock, poll
        self.finished: dict[str, str] = {}  # job path -> result
        self.context: Any = None
        self.subscription: Any = None

    def __enter__(self) -> JobWatch:
        self.context = self.glib.MainContext()
        # Signals are dispatched on the context that is thread-default when subscribing.
        self.context.push_thread_default()
        try:
            self.subscription = self.manager.JobRemoved.connect(self._removed)
        finally:
            self.context.pop_thread_default()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with suppress(Exception):
            self.subscription.disconnect()

    def _removed(self, _id: int, job: str, _unit: str, result: str) -> None:
        self.finished[job] = result

    def _dispatch(self) -> None:
        while self.context.iteration(False):
            pass

    def wait(self, jobs: Mapping[str, str], deadline: datetime, what: str) -> dict[str, str]:
        """Each job's result (done, failed, dependency, timeout, canceled, skipped)."""
        next_check = self.clock.now()
        while True:
            self._dispatch()
            pending = [job for job in jobs if job not in self.finished]
            if not pending:
                return {job: self.finished[job] for job in jobs}
            now = self.clock.now()
            if now >= next_check:
                # A job that is gone although its signal never came: judge by the unit.
                gone = [job for job in pending if not self._exists(job)]
                self._dispatch()  # its signal may have come meanwhile
                for job in gone:
                    self.finished.setdefault(job, "done")
                next_check = now + timedelta(seconds=0.5)
            if now >= deadline:
                raise UnitFailedError(
                    f"systemd did not finish the {what} job of "
                    f"{', '.join(jobs[job] for job in pending)} in time; it is still queued",
                    unit=jobs[pending[0]],
                    result="timeout",
                )
            self.clock.sleep(self.poll)

    def _exists(self, job: str) -> bool:
        try:
            self.bus.con.call_sync(
                SYSTEMD,
                job,
                "org.freedesktop.DBus.Properties",
                "Get",
                self.glib.Variant("(ss)", (f"{SYSTEMD}.Job", "State")),
                None,
                0,
                5000,
                None,
            )
        except self.glib.Error:
            return False
        return True
