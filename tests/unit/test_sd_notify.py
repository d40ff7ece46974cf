"""sd_notify: READY=1 and the status arrive as one datagram where $NOTIFY_SOCKET says;
without it nothing happens, and a socket that is not there is a warning, not an error."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.adapters.sd_notify import notify_ready


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in a directory, as systemd binds its notify socket."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listening:
        listening.bind(str(path))
        listening.settimeout(5)
        yield listening, str(path)


def received(listening: socket.socket) -> list[str]:
    return listening.recv(4096).decode().split("\n")


def test_ready_and_the_status_arrive_in_one_datagram(
    receiver: tuple[socket.socket, str],
) -> None:
    listening, path = receiver
    assert notify_ready("registered i-1 in api", environ={"NOTIFY_SOCKET": path})
    assert received(listening) == ["READY=1", "STATUS=registered i-1 in api"]


def test_the_socket_is_taken_from_the_process_environment(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    listening, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify_ready()
    assert received(listening) == ["READY=1"]


def test_an_abstract_socket_is_named_with_an_at_sign() -> None:
    name = f"flotilla-test-{os.getpid()}-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listening:
        listening.bind(b"\0" + name.encode())
        listening.settimeout(5)
        assert notify_ready("up", environ={"NOTIFY_SOCKET": f"@{name}"})
        assert received(listening) == ["READY=1", "STATUS=up"]


def test_a_status_on_several_lines_stays_one_status(
    receiver: tuple[socket.socket, str],
) -> None:
    listening, path = receiver
    assert notify_ready("first\nMAINPID=1", environ={"NOTIFY_SOCKET": path})
    assert received(listening) == ["READY=1", "STATUS=first MAINPID=1"]


def test_without_a_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify_ready("registered") is False
    assert notify_ready("registered", environ={}) is False
    assert notify_ready("registered", environ={"NOTIFY_SOCKET": ""}) is False


@pytest.mark.parametrize("address", ["{tmp}/nobody-listens", "{tmp}", "relative/path", "@"])
def test_an_unreachable_socket_is_logged_never_raised(
    address: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flotilla.adapters.sd_notify"):
        sent = notify_ready("x", environ={"NOTIFY_SOCKET": address.format(tmp=tmp_path)})
    assert sent is False
    assert any("cannot notify systemd" in r.getMessage() for r in caplog.records)
