"""Where decrypted environments are written: the agent's state directory must be on a tmpfs.

A unit's environment file holds its secrets in the clear (mode 0600, in a 0700 directory,
adapters/unit_files.py). On a tmpfs it lives only in memory and is gone at power-off; on a
disk it outlives the machine in the disk, its snapshots and its backups. So the agent
refuses a state directory whose filesystem is not a tmpfs (or ramfs), unless explicitly
allowed (`--allow-disk-state-dir`, FLOTILLA_ALLOW_DISK_STATE_DIR: development, tests, the
demo), and then warns once.

The filesystem type is read from the mount table (/proc/self/mountinfo): `os.statvfs`
gives no type. The mount holding the directory (or, before it is created, its nearest
existing parent) is the one whose device (major:minor) is the directory's `st_dev` and whose
mount point is the longest prefix of its real path; of mounts stacked on one point, the
last listed is the one on top.
"""

from __future__ import annotations

import logging
import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from flotilla.engine.errors import ConfigurationError

log = logging.getLogger(__name__)

MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
MOUNTINFO = Path("/proc/self/mountinfo")
ALLOW_OPTION = "--allow-disk-state-dir"
ALLOW_VARIABLE = "FLOTILLA_ALLOW_DISK_STATE_DIR"


@dataclass(frozen=True)
class Mount:
    device: tuple[int, int]
    mount_point: str
    filesystem: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (`\\040`)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a mountinfo table, in its order (see proc(5))."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 7:
            continue
        separator = fields.index("-")
        major, _, minor = fields[2].partition(":")
        mounts.append(Mount((int(major), int(minor)), _unescape(fields[4]), fields[separator + 1]))
    return mounts


def _existing(path: Path) -> Path:
    """The path itself, or its nearest parent that exists (a directory made later is made
    on the parent's filesystem, unless something is mounted there first)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.resolve()


def _under(path: str, mount_point: str) -> bool:
    return mount_point == "/" or path == mount_point or path.startswith(mount_point + "/")


def filesystem_type(path: Path, mountinfo: str | None = None) -> str:
    """The type of the filesystem holding `path` (e.g. "tmpfs", "ext4")."""
    real = _existing(path)
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the mount table ({MOUNTINFO}) to check the state directory "
                f"{path}: {exc.strerror}; pass {ALLOW_OPTION} to skip the check"
            ) from exc
    device = os.stat(real).st_dev
    wanted = (os.major(device), os.minor(device))
    candidates = [m for m in parse_mountinfo(mountinfo) if _under(str(real), m.mount_point)]
    same_device = [m for m in candidates if m.device == wanted]
    # Some filesystems (btrfs subvolumes) report a st_dev that no mount lists: then the
    # longest mount point alone decides.
    pool = same_device or candidates
    if not pool:
        raise ConfigurationError(
            f"no mount in {MOUNTINFO} holds the state directory {path}; pass {ALLOW_OPTION} "
            "to skip the check"
        )
    longest = max(len(m.mount_point) for m in pool)
    return [m for m in pool if len(m.mount_point) == longest][-1].filesystem


def private_directory(directory: Path, what: str) -> None:
    """Create `directory` (0700, its parents 0755), or take it as it is if this agent's user
    owns it, tightening a looser mode: secrets are written there. One another user owns is
    refused: it could read them."""
    directory.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = directory.stat()
    if info.st_uid != os.geteuid():
        raise ConfigurationError(
            f"{what} {directory} belongs to uid {info.st_uid}, not to this agent: secrets "
            "will not be written there; remove it or pick another"
        )
    if info.st_mode & 0o777 != 0o700:
        directory.chmod(0o700)


def check_state_dir(path: Path, *, allow_disk: bool, mountinfo: str | None = None) -> str:
    """Refuse a state directory that is not on a tmpfs, unless `allow_disk` (then warn).
    Returns the filesystem type found."""
    kind = filesystem_type(path, mountinfo)
    if kind in MEMORY_FILESYSTEMS:
        return kind
    if not allow_disk:
        raise ConfigurationError(
            f"the state directory {path} is on {kind}, not a tmpfs: the units' "
            "decrypted environments would be written to disk. Use /run/flotilla (the "
            "default; a tmpfs under systemd), mount a tmpfs there (mount -t tmpfs -o "
            f"mode=0700 tmpfs {path}), or, for development only, pass {ALLOW_OPTION} "
            f"(or set {ALLOW_VARIABLE}=1)"
        )
    log.warning(
        "the state directory %s is on %s, not a tmpfs: decrypted environments "
        "are written to disk (allowed by %s; never do this in production)",
        path,
        kind,
        ALLOW_OPTION,
    )
    return kind
