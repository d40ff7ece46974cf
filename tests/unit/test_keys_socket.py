"""The agent's keys socket (`cli.keys_socket`): real Unix sockets, the in-memory user store
(which passes the user store's contract suite)."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.adapters.memory_users import MemoryUserStore
from flotilla.cli.authorized_keys import Question, answer
from flotilla.cli.keys_socket import KeysServer, ask, bound_listener, systemd_listener
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import FlotillaError, TransientError
from flotilla.engine.users import User
from tests.unit.test_users import ed25519_line

ALICE, BOB, CAROL = ed25519_line("alice@x"), ed25519_line("bob@x"), ed25519_line("carol@x")


class Unreadable(MemoryUserStore):
    """A users table that cannot be read (DynamoDB unreachable)."""

    def get_user(self, name: str) -> User:
        raise TransientError("cannot reach DynamoDB")

    def list_users(self) -> list[User]:
        raise TransientError("cannot reach DynamoDB")


def users() -> MemoryUserStore:
    store = MemoryUserStore(FakeClock())
    store.put_user(User("alice", (ALICE,), services=("api",)))
    store.put_user(User("bob", (BOB,), services=("web",)))
    store.put_user(User("carol", (CAROL,), services=("api",), active=False))
    return store


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, MemoryUserStore]]:
    store = users()
    path = tmp_path / "keys.sock"
    server = KeysServer(bound_listener(path), store)
    server.start()
    try:
        yield str(path), store
    finally:
        server.close()


@pytest.mark.parametrize(
    ("user", "service", "shared", "expected"),
    [
        ("alice", "api", None, [ALICE]),
        ("alice", "web", None, []),  # not her service
        ("carol", "api", None, []),  # deactivated
        ("nobody", "api", None, []),
        ("ops", "api", "ops", [ALICE]),  # the shared login: every allowed user
        ("ops", None, "ops", []),  # no service: admins only
        ("not a name!", "api", None, []),  # no such user can exist
    ],
)
def test_the_socket_answers_as_the_users_table_does(
    served: tuple[str, MemoryUserStore],
    user: str,
    service: str | None,
    shared: str | None,
    expected: list[str],
) -> None:
    path, store = served
    got = ask(path, user, service, shared)
    assert got is not None
    assert got.lines == expected
    if user != "not a name!" and user != shared:
        assert got.lines == answer(store, Question(user, service)).lines


def test_every_answer_is_a_live_read(served: tuple[str, MemoryUserStore]) -> None:
    path, store = served
    first = ask(path, "alice", "api", None)
    assert first is not None
    assert first.lines == [ALICE]
    store.delete_user("alice", expected_version=store.get_user("alice").version)
    again = ask(path, "alice", "api", None)
    assert again is not None
    assert again.lines == []


def test_no_answer_without_an_agent_or_from_one_that_cannot_read(tmp_path: Path) -> None:
    assert ask(str(tmp_path / "missing.sock"), "alice", "api", None) is None
    path = tmp_path / "unreadable.sock"
    server = KeysServer(bound_listener(path), Unreadable(FakeClock()))
    server.start()
    try:
        assert ask(str(path), "alice", "api", None) is None  # the command then reads itself
    finally:
        server.close()


def test_an_agent_that_never_answers_is_given_up_on(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(path))
    silent.listen(1)
    try:
        assert ask(str(path), "alice", "api", None, timeout=0.2) is None
    finally:
        silent.close()


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"not json", "not a question"),
        (b"[1, 2]", "not a question"),
        (b'{"user": 7}', "strings or null"),
        (b'{"user": "alice", "service": "Not A Service"}', "invalid service name"),
    ],
)
def test_a_bad_question_gets_an_error_and_no_keys(line: bytes, error: str) -> None:
    with socket.socket(socket.AF_UNIX) as unused:
        reply = KeysServer(unused, users()).reply(line)
    assert set(reply) == {"error"}
    assert error in str(reply["error"])


def test_a_question_too_long_is_dropped(served: tuple[str, MemoryUserStore]) -> None:
    path, _ = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
        peer.settimeout(5)
        peer.connect(path)
        peer.sendall(b"x" * 10_000)
        assert peer.recv(100) == b""  # closed without an answer
    assert ask(path, "alice", "api", None) is not None  # and the server goes on


def test_the_bound_socket_is_for_root_and_flotilla_keys_alone(tmp_path: Path) -> None:
    path = tmp_path / "keys.sock"
    listener = bound_listener(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode in (0o600, 0o660)  # 0660 only where the group flotilla-keys exists
        assert not mode & 0o007
        listener.close()
        again = bound_listener(path)  # a socket left behind is replaced
        again.close()
    finally:
        listener.close()
    (tmp_path / "file").write_text("not a socket")
    with pytest.raises(FlotillaError, match="is not a socket"):
        bound_listener(tmp_path / "file")


def test_systemd_hands_over_the_socket_named_keys(tmp_path: Path) -> None:
    listener = bound_listener(tmp_path / "keys.sock")
    fd = listener.fileno()
    names = ["other"] * (fd - 3) + ["keys"]
    variables = {
        "LISTEN_PID": str(os.getpid()),
        "LISTEN_FDS": str(len(names)),
        "LISTEN_FDNAMES": ":".join(names),
    }
    handed = systemd_listener(variables)
    assert handed is not None
    assert handed.fileno() == fd
    assert variables == {}  # nothing this process starts takes them as its own
    listener.detach()
    handed.close()


def test_a_socket_meant_for_another_process_is_not_taken() -> None:
    variables = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "keys"}
    assert systemd_listener(variables) is None
    assert systemd_listener({}) is None


def test_many_peers_at_once_are_each_answered_or_turned_away(
    served: tuple[str, MemoryUserStore],
) -> None:
    path, _ = served
    results: list[object] = []

    def one() -> None:
        results.append(ask(path, "alice", "api", None))

    threads = [threading.Thread(target=one) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answered = [r for r in results if r is not None]
    assert answered  # some were; any turned away read the users table themselves
    assert all(r.lines == [ALICE] for r in answered)  # type: ignore[attr-defined]
