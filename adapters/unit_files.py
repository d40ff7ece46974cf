"""The unit and environment files of owned units on disk, shared by the systemd and the
process runtimes.

Files are written atomically (a temporary file, fsync, rename, fsync of the directory) and
only when their content or mode differs, so installing a revision twice rewrites nothing
and a crash never leaves half a file. Environment files hold decrypted secrets: mode 0600
from creation on, in a 0700 directory owned by the agent's user. File-system errors become
engine errors here: no permission is a `ConfigurationError` (run as root, or choose other
directories), anything else a `TransientError`.

A service's default sandbox (`engine.hardening`) goes beside its unit file, as the drop-in
`<unit>.d/10-flotilla-hardening.conf`: written before the unit file and removed after it,
so a crash in between never leaves the unit on disk without its sandbox.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from flotilla.adapters.state_dir import private_directory
from flotilla.engine.errors import ConfigurationError, TransientError
from flotilla.engine.hardening import DROP_IN_NAME
from flotilla.engine.units import PlannedUnit, environment_file_name, is_owned, require_owned


class UnitFiles:
    """Unit and environment files of owned units, written atomically and only when changed.

    Environment files hold decrypted secrets: mode 0600 from creation on (never a moment
    wider), in a 0700 directory owned by this process's user, one file per unit.
    """

    def __init__(self, unit_dir: Path, environment_dir: Path) -> None:
        self.unit_dir = unit_dir
        self.environment_dir = environment_dir

    def unit_path(self, name: str) -> Path:
        return self.unit_dir / name

    def drop_in_path(self, name: str) -> Path:
        return self.unit_dir / f"{name}.d" / DROP_IN_NAME

    def environment_path(self, name: str) -> Path:
        return self.environment_dir / environment_file_name(name)

    def installed(self) -> list[str]:
        """Owned names that have a unit file here."""
        with _file_errors("list", self.unit_dir):
            if not self.unit_dir.is_dir():
                return []
            return sorted(p.name for p in self.unit_dir.iterdir() if is_owned(p.name))

    def write(self, planned: Sequence[PlannedUnit]) -> list[str]:
        """Write what differs (environment files first, each drop-in before its unit file);
        return the units whose file or drop-in was rewritten (or removed)."""
        if any(unit.environment is not None for unit in planned):
            self._prepare_environment_dir()
        for unit in planned:
            if unit.environment is not None:
                self._write_if_changed(
                    self.environment_path(unit.installed), unit.environment.encode(), 0o600
                )
        with _file_errors("create", self.unit_dir):
            self.unit_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        rewritten = []
        for unit in planned:
            drop_in_changed = self._write_drop_in(unit.installed, unit.drop_in)
            path = self.unit_path(unit.installed)
            if self._write_if_changed(path, unit.text.encode(), 0o644) or drop_in_changed:
                rewritten.append(unit.installed)
        return rewritten

    def remove(self, names: Sequence[str]) -> list[str]:
        """Delete unit files, then environment files; return the unit files that existed."""
        removed = []
        for name in require_owned(names):
            with _file_errors("remove", self.unit_dir), suppress(FileNotFoundError):
                self.unit_path(name).unlink()
                removed.append(name)
            self._write_drop_in(name, None)
            with _file_errors("remove", self.environment_dir), suppress(FileNotFoundError):
                self.environment_path(name).unlink()
        return removed

    def _write_drop_in(self, name: str, content: str | None) -> bool:
        """Make the unit's drop-in `content` (None: none); whether anything changed. Its
        directory goes with it, unless it holds someone else's drop-in too."""
        path = self.drop_in_path(name)
        if content is not None:
            with _file_errors("create", path.parent):
                path.parent.mkdir(exist_ok=True)
                if path.parent.stat().st_mode & 0o777 != 0o755:  # readable as units are,
                    path.parent.chmod(0o755)  # whatever the agent's umask (0077)
            return self._write_if_changed(path, content.encode(), 0o644)
        with _file_errors("remove", path.parent):
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            with suppress(OSError):  # not empty: an operator's override stays, and its dir
                path.parent.rmdir()
        return True

    def _prepare_environment_dir(self) -> None:
        directory = self.environment_dir
        with _file_errors("create", directory):
            private_directory(directory, "environment directory")

    def _write_if_changed(self, path: Path, content: bytes, mode: int) -> bool:
        with _file_errors("write", path):
            try:
                info = path.stat()
                if info.st_mode & 0o777 == mode and path.read_bytes() == content:
                    return False
            except FileNotFoundError:
                pass
            write_atomically(path, content, mode)
            return True


def write_atomically(path: Path, content: bytes, mode: int) -> None:
    """Temp file (0600 from creation), fsync, chmod, rename over `path`, fsync the directory."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix="~")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextmanager
def _file_errors(action: str, path: Path) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise ConfigurationError(
                f"cannot {action} {path}: {exc.strerror}; run the agent as root or configure "
                "unit and environment directories it may write"
            ) from exc
        raise TransientError(f"cannot {action} {path}: {exc.strerror}") from exc
