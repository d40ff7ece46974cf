"""Tell systemd that a daemon is ready: the sd_notify protocol, in the standard library.

A service with `Type=notify` is "started" only when its main process sends `READY=1` as
one datagram to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or a name in the
abstract namespace when it starts with `@`). So `systemctl start flotilla-agent` returns
once the agent is really registered, and fails if the agent exits first; user data can
then tell CloudFormation the truth.

Outside systemd (`NOTIFY_SOCKET` unset: a shell, a test, the demo) this does nothing.
A failure to notify is logged and never raised: it must not stop a daemon that works.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

NOTIFY_VARIABLE = "NOTIFY_SOCKET"
SEND_TIMEOUT = 5.0  # seconds


def notify_ready(status: str | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send `READY=1` (and `STATUS=status`); True if a datagram was sent."""
    lines = ["READY=1"]
    if status is not None:
        # One line per assignment: a newline in the status would start another one.
        lines.append("STATUS=" + " ".join(status.splitlines()))
    return notify("\n".join(lines), environ=environ)


def notify(message: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send `message` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`, if set."""
    address = (os.environ if environ is None else environ).get(NOTIFY_VARIABLE, "")
    if not address:
        return False
    if address.startswith("@"):
        # The abstract namespace: a leading NUL byte instead of the "@".
        target: str | bytes = b"\0" + address[1:].encode()
    elif address.startswith("/"):
        target = address
    else:
        log.warning("cannot notify systemd: %s=%r is not a socket path", NOTIFY_VARIABLE, address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.settimeout(SEND_TIMEOUT)  # a full queue must not hang the daemon
            sender.sendto(message.encode(), target)
    except OSError as failed:
        log.warning("cannot notify systemd at %s: %s", address, failed)
        return False
    return True
