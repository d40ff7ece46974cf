"""sshd's questions about SSH keys, answered by the agent over a Unix socket.

`flotilla keys` runs at every SSH login. A fresh process that imports boto3 and builds a
DynamoDB client spends most of its time on that alone (docs/figures.md, start-up). The
agent runs anyway, with a warm client, so it answers instead: `flotilla keys` sends the
question to the socket and prints the answer, and reads the users table itself only when
no agent answers (none running, a restart, a time-out, an error). Either way every
answer is a live read of the users table (`cli.authorized_keys`): nothing is cached, so a
user removed is refused at the next login.

On a worker the socket is systemd's (`flotilla-keys.socket`: /run/flotilla-keys.sock,
root:flotilla-keys, mode 0660, so only root and sshd's AuthorizedKeysCommandUser reach
it), handed to the agent when systemd starts it. Where systemd does not start the agent,
`flotilla agent --keys-socket PATH` binds one itself, with the same owner and mode.

One JSON line each way: the question {"user", "service", "shared_login"} (at most
`MAX_QUESTION` bytes), then the answer {"lines", "warnings"} or {"error"}.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flotilla.cli.authorized_keys import Answer, answer, question
from flotilla.engine.errors import FlotillaError

if TYPE_CHECKING:  # imported for types only: sshd waits for these imports
    from flotilla.engine.ports import UserStore

DEFAULT_PATH = "/run/flotilla-keys.sock"
GROUP = "flotilla-keys"  # sshd's AuthorizedKeysCommandUser (cfn_templates/service.yaml)
SYSTEMD_NAME = "keys"  # FileDescriptorName= of flotilla-keys.socket
MAX_QUESTION = 4096
MAX_ANSWER = 4 * 1024 * 1024  # every key of every user, with room to spare
CLIENT_SECONDS = 3.0  # each step of an exchange; then `flotilla keys` reads for itself
PEER_SECONDS = 2.0  # a peer that has not asked in this time is dropped
MAX_PEERS = 16  # answered at once; more are turned away (they read for themselves)
log = logging.getLogger(__name__)


def ask(
    path: str,
    user: str | None,
    service: str | None,
    shared_login: str | None,
    *,
    timeout: float = CLIENT_SECONDS,
) -> Answer | None:
    """The agent's answer, or None if no agent gave one (the caller reads for itself)."""
    asked = {"user": user, "service": service, "shared_login": shared_login}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
            peer.settimeout(timeout)
            peer.connect(path)
            peer.sendall(json.dumps(asked).encode() + b"\n")
            reply = json.loads(_line(peer, MAX_ANSWER))
    except (OSError, ValueError):  # no socket, no agent, too slow, a garbled reply
        return None
    if not isinstance(reply, dict) or "error" in reply:
        return None
    lines, warnings = reply.get("lines"), reply.get("warnings")
    if not isinstance(lines, list) or not _strings(lines):
        return None
    if not isinstance(warnings, list) or not _strings(warnings):
        return None
    return Answer([str(line) for line in lines], [str(w) for w in warnings])


def _strings(values: list[Any]) -> bool:
    return all(isinstance(item, str) for item in values)


def _line(peer: socket.socket, limit: int) -> bytes:
    """One line from `peer` (without its newline); ValueError past `limit` bytes."""
    data = bytearray()
    while b"\n" not in data:
        chunk = peer.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ValueError(f"more than {limit} bytes")
    return bytes(data).split(b"\n", 1)[0]


# --- the agent's side ---------------------------------------------------------------


def systemd_listener(environ: MutableMapping[str, str] | None = None) -> socket.socket | None:
    """The socket systemd handed this process as `keys` (sd_listen_fds), if any. The
    variables are removed, so that nothing this process starts takes them as its own."""
    variables = os.environ if environ is None else environ
    names = variables.get("LISTEN_FDNAMES", "").split(":")
    count = variables.get("LISTEN_FDS", "")
    ours = variables.get("LISTEN_PID") == str(os.getpid())
    for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        variables.pop(variable, None)
    if not ours or not count.isdigit() or SYSTEMD_NAME not in names[: int(count)]:
        return None
    fd = 3 + names.index(SYSTEMD_NAME)  # SD_LISTEN_FDS_START
    os.set_inheritable(fd, False)
    return socket.socket(fileno=fd)


def bound_listener(path: Path) -> socket.socket:
    """A socket bound at `path`, root and `GROUP` only (0660; 0600 without the group).
    A socket left there by an agent before is replaced; any other file is refused."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise FlotillaError(f"--keys-socket {path} exists and is not a socket: remove it")
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # never reachable by others, not even for a moment
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    try:
        gid = grp.getgrnam(GROUP).gr_gid
    except KeyError:
        return _listening(listener)
    os.chown(path, -1, gid)
    path.chmod(0o660)
    return _listening(listener)


def _listening(listener: socket.socket) -> socket.socket:
    listener.listen(MAX_PEERS)
    return listener


class KeysServer:
    """Answers each question on `listener` from `store`, a thread per peer."""

    def __init__(self, listener: socket.socket, store: UserStore) -> None:
        self._listener = listener
        self._store = store
        self._peers = threading.BoundedSemaphore(MAX_PEERS)

    def start(self) -> None:
        threading.Thread(target=self._accept, name="keys-socket", daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                peer, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self._peers.acquire(blocking=False):
                peer.close()  # it reads the users table itself
                continue
            threading.Thread(target=self._serve, args=(peer,), daemon=True).start()

    def _serve(self, peer: socket.socket) -> None:
        try:
            with peer:
                peer.settimeout(PEER_SECONDS)
                reply = self.reply(_line(peer, MAX_QUESTION))
                peer.sendall(json.dumps(reply).encode() + b"\n")
        except (OSError, ValueError) as exc:
            log.warning("a keys question went unanswered: %s", exc)
        finally:
            self._peers.release()

    def reply(self, line: bytes) -> Mapping[str, Any]:
        """The answer to one question line, or why there is none."""
        try:
            asked = json.loads(line)
            fields = [asked.get(k) for k in ("user", "service", "shared_login")]
        except (ValueError, AttributeError):
            return {"error": "not a question: one JSON object per line"}
        if not all(value is None or isinstance(value, str) for value in fields):
            return {"error": "user, service and shared_login are strings or null"}
        try:
            checked = question(*fields)
            if checked is None:
                return {"lines": [], "warnings": []}
            found = answer(self._store, checked)
        except FlotillaError as exc:  # the users table unreadable, a bad service name
            return {"error": exc.message}
        log.info(
            "answered sshd: %d key line(s) for %s on %s",
            len(found.lines),
            checked.user or "the shared login",
            checked.service or "admins only",
        )
        return {"lines": found.lines, "warnings": found.warnings}
