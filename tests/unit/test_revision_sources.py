"""Revision sources: unit and env files from a directory or a tar, and the docker unit."""

from __future__ import annotations

import io
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flotilla.adapters.secrets import LocalSecretBox
from flotilla.cli.revision_sources import (
    MAX_FILE_BYTES,
    from_directory,
    from_files,
    from_tar,
    parse_env_file,
)
from flotilla.engine import units
from flotilla.engine.errors import ValidationError
from flotilla.engine.revisions import build_revision

WEB = "[Unit]\nAfter=docker.service\nRequires=docker.service\n[Service]\nExecStart=/usr/bin/web\n"
WORKER = "[Service]\nExecStart=/usr/bin/worker\n"


def write(directory: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return directory


def tar_of(files: dict[str, bytes], prefix: str = "./") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        directory = tarfile.TarInfo(".")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_directory_with_two_units_each_keeping_only_its_own_variables(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "web.service": WEB,
            "web.env": "# the web's settings\nDB_PASSWORD='hunter2'\nexport PORT=8080\n",
            "worker.service": WORKER,
            "worker.env": 'QUEUE="jobs \\"fast\\""\n\n; comment\nTOKEN=abc=def\n',
        },
    )
    sources = from_directory(tmp_path)
    assert sources.units == {"web.service": WEB, "worker.service": WORKER}
    assert sources.environments == {
        "web.service": {"DB_PASSWORD": "hunter2", "PORT": "8080"},
        "worker.service": {"QUEUE": 'jobs "fast"', "TOKEN": "abc=def"},
    }
    assert "hunter2" not in repr(sources)
    # Installed, each unit's env file holds only its own variables.
    planned = units.plan_installation(
        "ab" * 32, sources.units, sources.environments, "/run/flotilla/env"
    )
    by_unit = {p.unit: p for p in planned}
    assert by_unit["web.service"].environment is not None
    assert "hunter2" in by_unit["web.service"].environment
    assert "TOKEN" not in by_unit["web.service"].environment
    assert "DB_PASSWORD" not in (by_unit["worker.service"].environment or "")
    # A dependency on docker.service stays as it is (it is not a sibling).
    assert "After=docker.service" in by_unit["web.service"].text


def test_tar_from_stdin_bytes_gives_the_same_sources(tmp_path: Path) -> None:
    files = {
        "web.service": WEB.encode(),
        "web.env": b"A=1\n",
        "tick.timer": b"[Timer]\nOnCalendar=daily\n",
    }
    write(tmp_path, dict(files))
    assert from_tar(tar_of(files)) == from_directory(tmp_path)
    assert from_tar(tar_of(files, prefix="")).units["tick.timer"].startswith("[Timer]")


def test_compressed_tar_is_read() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("web.service")
        info.size = len(WEB)
        archive.addfile(info, io.BytesIO(WEB.encode()))
    assert from_tar(buffer.getvalue()).units == {"web.service": WEB}


def test_docker_env_without_unit_becomes_a_container_unit() -> None:
    sources = from_files(
        {
            "cache.env": b"DOCKER_IMAGE=redis:7\nDOCKER_PORT_6380=6379\nDOCKER_PORT_53=53/udp\n"
            b"PASSWORD=s3cret\n",
            "web.service": WEB.encode(),
        }
    )
    assert sources.generated == ("cache.service",)
    text = sources.units["cache.service"]
    assert "After=docker.service\nRequires=docker.service\n" in text
    assert "Environment=FLOTILLA_IMAGE=redis:7\n" in text
    assert (
        "ExecStart=/usr/bin/docker run --rm --name %N -p 53:53/udp -p 6380:6379 -e PASSWORD "
        "${FLOTILLA_IMAGE}\n" in text
    )
    assert "s3cret" not in text
    assert sources.environments["cache.service"] == {"PASSWORD": "s3cret"}
    # The generated unit is a valid unit that a revision accepts and installs.
    revision = build_revision(
        "api", "v1", sources.units, sources.environments, LocalSecretBox(os.urandom(32)),
        datetime(2026, 11, 25, tzinfo=UTC),
    )  # fmt: skip
    planned = units.plan_installation(revision.id, revision.units, sources.environments, "/run/e")
    cache = next(p for p in planned if p.unit == "cache.service")
    assert "EnvironmentFile=/run/e/" in cache.text


def test_docker_settings_become_run_options_not_container_variables() -> None:
    sources = from_files(
        {
            "app.env": b"DOCKER_IMAGE=127.0.0.1:5000/app:stable\nDOCKER_LOG_DRIVER=journald\n"
            b"DOCKER_VOLUME_DATA=/srv/app:/data:ro\nDOCKER_VOLUME_CACHE=/var/cache/app:/cache\n"
            b"DOCKER_PORT_8080=80\nMODE=fast\n"
        }
    )
    text = sources.units["app.service"]
    run = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert run == (
        "ExecStart=/usr/bin/docker run --rm --name %N --log-driver journald -p 8080:80 "
        "-v /var/cache/app:/cache -v /srv/app:/data:ro -e MODE ${FLOTILLA_IMAGE}"
    )
    # Only the container's own variable is left in its environment: no DOCKER_* leaks.
    assert sources.environments == {"app.service": {"MODE": "fast"}}


def test_docker_image_only_gives_a_unit_without_environment() -> None:
    sources = from_files({"app.env": b"DOCKER_IMAGE=nginx:1.27\n"})
    assert list(sources.units) == ["app.service"]
    assert sources.environments == {}


def test_an_env_file_for_a_socket_belongs_to_the_socket() -> None:
    sources = from_files({"web.socket": b"[Socket]\nListenStream=80\n", "web.socket.env": b"A=1\n"})
    assert sources.environments == {"web.socket": {"A": "1"}}


def build_from(files: dict[str, bytes]) -> None:
    """Read the files, then build the revision (unit syntax is checked there)."""
    sources = from_files(files)
    build_revision(
        "api", "v1", sources.units, sources.environments, LocalSecretBox(os.urandom(32)),
        datetime(2026, 11, 25, tzinfo=UTC),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"web.service": b"\x89PNG\r\n\x1a\n\x00\x00garbage"}, "binary"),
        ({"web.service": b"\xff\xfe[Service]\n"}, "not UTF-8"),
        ({"README.md": b"hello"}, "unknown kind of file"),
        ({"web.service": WEB.encode(), "run.sh": b"#!/bin/sh\n"}, "unknown kind of file"),
        ({"web;rm -rf.service": WEB.encode()}, "not allowed"),
        ({"$(reboot).env": b"DOCKER_IMAGE=x\n"}, "not allowed"),
        ({"web.service": b"x" * (MAX_FILE_BYTES + 1)}, "larger than"),
        ({"web.env": b"A=1\n"}, "web.env has no unit"),
        ({"web.service": WEB.encode(), "web.env": b"this is not an assignment\n"}, "line 1"),
        ({"web.service": WEB.encode(), "web.env": b"1BAD=x\n"}, "line 1"),
        ({"web.service": WEB.encode(), "web.env": b'A="open\n'}, "not closed"),
        ({"app.env": b"DOCKER_IMAGE=bad image; reboot\n"}, "not an image"),
        ({"app.env": b"DOCKER_IMAGE=nginx\nDOCKER_PORT_http=80\n"}, "DOCKER_PORT_"),
        ({"app.env": b"DOCKER_IMAGE=nginx\nDOCKER_PORT_80=99999\n"}, "DOCKER_PORT_"),
        ({"app.env": b"DOCKER_IMAGE=nginx\nDOCKER_LOG_DRIVER=Json File\n"}, "log driver"),
        ({"app.env": b"DOCKER_IMAGE=nginx\nDOCKER_LOG_DRIVER=%n\n"}, "log driver"),
        ({"app.env": b"DOCKER_IMAGE=nginx\nDOCKER_VOLUME_A=data:/data\n"}, "DOCKER_VOLUME_A"),
        ({"app.env": b"DOCKER_IMAGE=nginx\nDOCKER_VOLUME_A=/a/../etc:/x\n"}, "no '..'"),
        ({"app.env": b"DOCKER_IMAGE=nginx\nDOCKER_VOLUME_A=/a:/b:rx\n"}, "DOCKER_VOLUME_A"),
        ({"app.env": b"DOCKER_IMAGE=nginx\nDOCKER_VOLUME_A=/a b:/b\n"}, "DOCKER_VOLUME_A"),
        ({"app.env": b"DOCKER_IMAGE=nginx\nDOCKER_VOLUME_=/a:/b\n"}, "DOCKER_VOLUME_"),
        ({"app.env": b"DOCKER_IMAGE=nginx\nDOCKER_MEMORY=1g\n"}, "not a container setting"),
        ({"app.env": b"DOCKER_IMAGE=nginx\nFLOTILLA_IMAGE=evil:1\n"}, "reserved"),
        ({}, "no unit files"),
        ({"web.service": b"just text\n"}, "expected 'Key=Value'"),
    ],
)
def test_bad_files_are_refused_with_a_clear_message(files: dict[str, bytes], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        build_from(files)
    assert message in raised.value.message


def test_ascii_blanks_around_a_key_are_trimmed_as_systemd_does() -> None:
    assert parse_env_file("web.env", "K =v\n\tL\t= w \n") == {"K": "v", "L": "w"}


def test_a_no_break_space_in_a_key_is_refused_not_trimmed() -> None:
    with pytest.raises(ValidationError, match="line 1"):
        parse_env_file("web.env", "K\u00a0=v\n")


def test_env_values_never_appear_in_errors() -> None:
    with pytest.raises(ValidationError) as raised:
        parse_env_file("web.env", "GOOD=1\nsupersecret-value-without-key\n")
    assert "supersecret" not in raised.value.message


def test_unreadable_directory(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        from_directory(tmp_path / "missing")
    write(tmp_path, {"web.service": WEB})
    with pytest.raises(ValidationError, match="not a directory"):
        from_directory(tmp_path / "web.service")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValidationError, match="is a directory"):
        from_directory(tmp_path)


def test_unreadable_file(tmp_path: Path) -> None:
    write(tmp_path, {"web.service": WEB})
    (tmp_path / "web.env").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValidationError, match="cannot read"):
        from_directory(tmp_path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x00\x01 this is not a tar archive at all" * 40, "not a readable tar"),
        (tar_of({"web.service": WEB.encode()}, prefix="dir/"), "inside a directory"),
        (tar_of({"we b.service": WEB.encode()}), "not allowed"),
    ],
)
def test_bad_archives_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        from_tar(data)
    assert message in raised.value.message


def test_links_in_archives_are_refused() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        link = tarfile.TarInfo("web.service")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/shadow"
        archive.addfile(link)
    with pytest.raises(ValidationError, match="not a regular file"):
        from_tar(buffer.getvalue())
