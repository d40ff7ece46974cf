"""Secrets at rest (issue 14): the agent's state directory, where decrypted environments are
written, must be on a tmpfs, unless explicitly allowed (then a warning).

The filesystem type comes from /proc/self/mountinfo. A real tmpfs is mounted for the test
where this process may (root), and unmounted after.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.adapters.state_dir import (
    ALLOW_OPTION,
    check_state_dir,
    filesystem_type,
    parse_mountinfo,
)
from flotilla.engine.errors import ConfigurationError
from testbed.agents import FLOTILLA

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
25 24 0:23 / /run rw,nosuid - tmpfs tmpfs rw,mode=755
30 25 0:27 / /run rw,nosuid - tmpfs tmpfs rw,size=1k
31 27 0:40 / /srv/with\\040space rw - xfs /dev/vdb rw
"""


def test_the_mount_table_is_parsed_with_its_escapes() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts] == ["/proc", "/", "/run", "/run", "/srv/with space"]
    assert [m.filesystem for m in mounts] == ["proc", "ext4", "tmpfs", "tmpfs", "xfs"]
    assert mounts[2].device == (0, 23)


def test_a_directory_on_disk_is_refused_with_what_to_do(tmp_path: Path) -> None:
    if filesystem_type(tmp_path) in {"tmpfs", "ramfs"}:
        pytest.skip("the temporary directory is on a tmpfs here")
    with pytest.raises(ConfigurationError) as refused:
        check_state_dir(tmp_path / "state", allow_disk=False)
    message = refused.value.message
    assert f"{tmp_path / 'state'} is on {filesystem_type(tmp_path)}, not a tmpfs" in message
    assert "/run/flotilla" in message
    assert "mount -t tmpfs" in message
    assert ALLOW_OPTION in message


def test_a_directory_on_disk_is_allowed_explicitly_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if filesystem_type(tmp_path) in {"tmpfs", "ramfs"}:
        pytest.skip("the temporary directory is on a tmpfs here")
    with caplog.at_level(logging.WARNING):
        kind = check_state_dir(tmp_path, allow_disk=True)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{tmp_path} is on {kind}, not a tmpfs" in warning


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    target = tmp_path / "tmpfs"
    target.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_directory_on_a_tmpfs_is_accepted(tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert check_state_dir(tmpfs, allow_disk=False) == "tmpfs"
        # not made yet: judged by the mount it will be made on
        assert check_state_dir(tmpfs / "flotilla" / "env", allow_disk=False) == "tmpfs"
    assert caplog.records == []


def test_a_directory_beside_a_tmpfs_mount_point_is_judged_by_its_own_mount(
    tmpfs: Path, tmp_path: Path
) -> None:
    """`.../tmpfs` is a string prefix of `.../tmpfs-not`, not a parent of it."""
    beside = tmp_path / "tmpfs-not"
    beside.mkdir()
    assert filesystem_type(beside) != "tmpfs"


def test_the_agent_command_refuses_a_disk_state_dir_before_registering(tmp_path: Path) -> None:
    """`flotilla agent` exits with the one-line error. It checks after finding its service,
    so the refusal is shown against an emulated AWS."""
    if filesystem_type(tmp_path) in {"tmpfs", "ramfs"}:
        pytest.skip("the temporary directory is on a tmpfs here")
    from testbed.agents import aws_world, flotilla_cli

    with aws_world("statedir") as world:
        created = flotilla_cli(world, "service", "create", "api")
        assert created.returncode == 0, created.stderr
        command = [
            FLOTILLA, "agent", "--service", "api", "--instance-id", "i-1",
            "--runtime", "process", "--state-dir", str(tmp_path / "state"),
        ]  # fmt: skip
        done = subprocess.run(
            command,
            env=world.agent_environment(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: the state directory"), last
        assert ALLOW_OPTION in last
        assert "Traceback" not in done.stderr
        instances = world.wiring.store.list_instances("api")
        assert instances == []  # it never registered
