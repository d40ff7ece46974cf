"""Who an agent process is, in words another process on the same machine can check.

An identity names the machine (host name and boot id), the process id and the process's
start time in clock ticks since boot (`/proc/<pid>/stat`, field 22). A successor agent on
the same machine can then prove its predecessor dead instead of waiting out its lease:
another boot means every process of the old one is gone, and a pid that no longer exists,
or exists with another start time (reused), is not the same process.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def current_identity() -> str:
    """This process's identity: `host/boot-id/pid/start-ticks`."""
    pid = os.getpid()
    return f"{socket.gethostname()}/{_boot_id()}/{pid}/{_start_ticks(pid)}"


def proven_dead(identity: str) -> bool:
    """True only when the process `identity` names is certainly gone; False when it runs,
    or when this machine cannot tell (another host, or an identity it cannot read)."""
    parts = identity.split("/")
    if len(parts) != 4:
        return False
    host, boot, pid, start = parts
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if boot != _boot_id():
        return True
    return _start_ticks(int(pid)) != start


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return "unknown-boot"


def _start_ticks(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat; "" when the process does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""
