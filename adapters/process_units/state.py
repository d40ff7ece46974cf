"""The state file of a unit run by the process runtime: the supervisor writes it, the
runtime (in this agent or a restarted one) reads it.

One JSON file per unit holds the supervisor's and the main process's pids, each with a
token that identifies the live process (its start time in /proc), the invocation id of
the start that launched the supervisor, and the unit's ActiveState, SubState, Result and
exit status in systemd's words. A pid whose token no longer matches is a process that is
gone (its pid may have been reused). Files are replaced atomically, so a reader never sees
half a state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flotilla.adapters.unit_files import write_atomically
from flotilla.engine.ports import UnitStatus


def read_state(path: Path) -> dict[str, Any]:
    """The recorded state, or {} when there is none (never started, or removed)."""
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return state


def unit_status(name: str, state: Mapping[str, Any]) -> UnitStatus:
    """The unit's status by its state file, and by whether its processes still live."""
    if not state:
        return UnitStatus(name, "inactive", "dead", "success")
    lost = expects_process(state) and not alive(state, "supervisor")
    if lost and not alive(state, "main"):  # the supervisor and its unit were killed
        return UnitStatus(name, "failed", "failed", "signal")
    main_pid = state.get("main_pid") if alive(state, "main") else None
    return UnitStatus(
        name,
        state["active_state"],
        state["sub_state"],
        state["result"],
        state["exit_status"],
        main_pid=main_pid,
    )


def process_token(pid: int | None) -> str | None:
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


def started(state: Mapping[str, Any], invocation: str) -> bool:
    """Whether the supervisor of this invocation has got past starting (or died trying)."""
    if state.get("invocation") != invocation:
        return False
    return state["active_state"] != "activating" or not alive(state, "supervisor")


def alive(state: Mapping[str, Any], role: str) -> bool:
    pid, token = (
        state.get("supervisor" if role == "supervisor" else "main_pid"),
        state.get(f"{role}_token"),
    )
    return pid is not None and token is not None and process_token(pid) == token


def expects_process(state: Mapping[str, Any]) -> bool:
    return state["active_state"] in ("activating", "active", "deactivating") and (
        state["sub_state"] != "exited"
    )


def write_state(
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
