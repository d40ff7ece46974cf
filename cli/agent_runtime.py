"""Which unit runtime `flotilla agent` uses, decided in the open and checked before it starts.

By default units run on systemd when the host runs systemd (`/run/systemd/system` is a
directory: sd_booted()'s test), else as children of the agent (the process runtime). On a
host that runs systemd, the process runtime is used only when asked for by name: units
that silently escape systemd (no cgroup, no restart, no journal) would be a surprise. An
agent that should use systemd but cannot import its D-Bus bindings stops with one line
saying what to install; it never falls back to the process runtime. The choice and its
reason are logged once at start. The composition root builds the chosen runtime
(`cli.wiring.unit_runtime`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flotilla.adapters.systemd import BINDINGS_FIX
from flotilla.engine.errors import ConfigurationError, ValidationError

# What sd_booted() tests: systemd creates it early at boot and nothing else does.
SYSTEMD_RUNNING_DIR = Path("/run/systemd/system")
SYSTEMD, PROCESS = "systemd", "process"


@dataclass(frozen=True)
class RuntimeChoice:
    kind: str  # SYSTEMD or PROCESS
    reason: str  # why, in words for the log line

    def describe(self) -> str:
        if self.kind == SYSTEMD:
            return f"unit runtime: systemd ({self.reason})"
        return (
            f"unit runtime: process ({self.reason}); units run as children of the agent, "
            "as the agent's user, without cgroups, restarts or User="
        )


def host_runs_systemd() -> bool:
    return SYSTEMD_RUNNING_DIR.is_dir()


def choose_runtime(
    asked: str | None,
    *,
    bus_address_given: bool,
    host_runs_systemd: bool,
    missing_bindings: str | None,
) -> RuntimeChoice:
    """The runtime for `--runtime asked` (None: not given), or an error saying what to fix.

    `missing_bindings` is None when pydbus and PyGObject import, else why they do not.
    """
    if asked == PROCESS:
        if bus_address_given:
            raise ValidationError(
                "--bus-address is the address of a systemd manager, but --runtime process "
                "runs units without systemd: drop one of the two"
            )
        if host_runs_systemd:
            return RuntimeChoice(PROCESS, "--runtime process, although the host runs systemd")
        return RuntimeChoice(PROCESS, "--runtime process")
    if asked == SYSTEMD:
        reason = "--runtime systemd"
    elif bus_address_given:
        reason = "--bus-address names a systemd manager"
    elif host_runs_systemd:
        reason = f"the host runs systemd: {SYSTEMD_RUNNING_DIR} exists"
    else:
        return RuntimeChoice(
            PROCESS, f"the host does not run systemd: {SYSTEMD_RUNNING_DIR} is not a directory"
        )
    if missing_bindings is not None:
        raise ConfigurationError(
            f"the agent runs units on systemd ({reason}) but cannot import pydbus and "
            f"PyGObject ({missing_bindings}): {BINDINGS_FIX}"
        )
    return RuntimeChoice(SYSTEMD, reason)
