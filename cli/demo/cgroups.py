"""Fresh cgroups for one systemd manager each: a private `systemd --user` of the demo and
the tests (cli/demo/systemd_manager.py), or a booted machine's systemd (the tests'
tests/support/booted_machine.py).

Two managers that share a cgroup tree manage the same directories: their same-named
units (journald, dbus, a unit called user-data) share one cgroup, so stopping one may
kill the other's, and `systemd-nspawn --keep-unit` started from one cgroup puts every
machine in the same `payload` subtree. So each manager starts in a cgroup of its own, below
the caller's, in every mounted hierarchy, and the cgroup is removed after it exits.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

# Joins the cgroups named before `--`, then executes what follows: the manager (or the
# tool that starts it) is then in them from its first instruction, and so is every child.
JOIN_AND_EXEC = (
    'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs"; shift; done; shift; exec "$@"'
)


def joined(groups: list[Path], command: list[str]) -> list[str]:
    """`command`, run in `groups` (made by `fresh`)."""
    return ["sh", "-c", JOIN_AND_EXEC, "sh", *(str(group) for group in groups), "--", *command]


@dataclass(frozen=True)
class _Hierarchy:
    mount_point: Path
    current: str  # this process's cgroup path in the hierarchy, relative to the mount


def hierarchies() -> list[_Hierarchy]:
    """Every mounted cgroup hierarchy with the path of this process in it."""
    try:
        membership = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    paths: dict[str, str] = {}  # "0" for cgroup2, else each controller or name=...
    for line in membership:
        number, controllers, path = line.split(":", 2)
        for key in controllers.split(",") if controllers else [f"#{number}"]:
            paths[key] = path
    found = []
    for line in mounts:
        before, _, after = line.partition(" - ")
        fields, extra = before.split(), after.split()
        if not extra or extra[0] not in ("cgroup", "cgroup2"):
            continue
        mount_root, mount_point = fields[3], fields[4]
        if extra[0] == "cgroup2":
            current = paths.get("#0")
        else:
            options = extra[2].split(",")
            current = next((paths[o] for o in options if o in paths), None)
        if current is None:
            continue
        relative = os.path.relpath(current, mount_root) if mount_root != "/" else current
        found.append(_Hierarchy(Path(mount_point), relative.strip("/")))
    return found


def fresh(name: str) -> list[Path]:
    """A fresh cgroup below this process's own in every hierarchy."""
    made = []
    for hierarchy in hierarchies():
        parent = hierarchy.mount_point / hierarchy.current
        group = parent / name
        group.mkdir()
        made.append(group)
        # A new cpuset has no CPUs or memory nodes: nothing could join it until they are set.
        for setting in ("cpuset.cpus", "cpuset.mems"):
            if (group / setting).exists():
                (group / setting).write_text((parent / setting).read_text())
    return made


def _walk_bottom_up(group: Path) -> Iterator[Path]:
    if not group.is_dir():
        return
    for child in group.iterdir():
        if child.is_dir():
            yield from _walk_bottom_up(child)
    yield group


def pids_in(groups: list[Path]) -> set[int]:
    pids: set[int] = set()
    for group in groups:
        for directory in _walk_bottom_up(group):
            try:
                pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
            except OSError:
                continue
    return pids


def remove(groups: list[Path], timeout: float) -> None:
    """Kill what is left in the groups (and the groups below them), then remove them."""
    deadline = time.monotonic() + timeout
    while (left := pids_in(groups)) and time.monotonic() < deadline:
        for pid in left:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    for group in groups:
        for directory in _walk_bottom_up(group):
            with suppress(OSError):  # still busy after the timeout: nothing more to do
                directory.rmdir()
