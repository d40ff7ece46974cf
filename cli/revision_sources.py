"""Reading a revision's source files: unit files and env files, from a directory or a tar.

A revision is given as a flat set of files, as in the original Flotilla:

    web.service, web.socket, cleanup.timer   unit files, deployed as they are
    web.env                                  the environment of web.service only
    cache.env with DOCKER_IMAGE=…            and no cache.service: a generated unit that
                                             runs the image with `docker run`

    hooks/validate, hooks/before-stop,       lifecycle hooks (docs/hooks.md): scripts run on
    hooks/after-start                        the instance, with their `#!` interpreter or
                                             /bin/sh
    hooks/timeouts                           optional: `validate=60` lines, each hook's
                                             timeout in seconds (default 300, at most 3600)

`X.env` belongs to `X.service` (or to `X` itself when `X` is a unit name, e.g.
`web.socket.env`), so two units never share or mix their variables. Everything here is
pure apart from reading the directory; nothing is stored, and a bad input raises
`ValidationError` naming the file (never a variable's value).

The container unit and its DOCKER_* options are cli/container_unit.py's (docs/containers.md).
"""

from __future__ import annotations

import io
import re
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flotilla.cli.container_unit import DOCKER_IMAGE, docker_unit
from flotilla.engine import validation
from flotilla.engine.errors import ValidationError
from flotilla.engine.records import DEFAULT_HOOK_TIMEOUT_SECONDS, HOOK_NAMES, Hook
from flotilla.engine.validation import UNIT_SUFFIXES, environment_variables, unit_name

MAX_FILE_BYTES = 64 * 1024  # per file, unit or env
MAX_FILES = 100
MAX_ARCHIVE_BYTES = 8 * 1024 * 1024  # what `revision add -` reads from standard input
ENV_SUFFIX = ".env"
HOOKS_DIR = "hooks"  # the one folder a revision may have: its lifecycle hooks
HOOK_TIMEOUTS = "timeouts"  # hooks/timeouts: `NAME=SECONDS` lines

# File names become unit names and parts of paths and command lines: no shell
# metacharacters, no spaces, no path separators.
_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.@-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What systemd's EnvironmentFile= parser trims around a key and a value: ASCII blanks
# only. A no-break space is part of the name, which makes it invalid, not trimmed.
_ENV_BLANKS = " \t\r"


@dataclass(frozen=True)
class RevisionSources:
    """Unit files and each unit's own environment, ready for `build_revision`."""

    units: dict[str, str]
    environments: dict[str, dict[str, str]] = field(repr=False)  # values may be secret
    generated: tuple[str, ...] = ()  # units generated from a DOCKER_IMAGE env file
    hooks: dict[str, Hook] = field(default_factory=dict)  # hooks/<name>, with timeouts


def from_directory(path: Path) -> RevisionSources:
    """Every file directly inside `path` (subdirectories are refused, not searched)."""
    try:
        entries = sorted(path.iterdir())
    except FileNotFoundError as exc:
        raise ValidationError(f"directory {str(path)!r} does not exist") from exc
    except NotADirectoryError as exc:
        raise ValidationError(
            f"{str(path)!r} is not a directory; give a directory or '-' for a tar on stdin"
        ) from exc
    except OSError as exc:
        raise ValidationError(
            f"cannot read directory {str(path)!r}: {exc.strerror or exc}"
        ) from exc
    if len(entries) > MAX_FILES:
        raise ValidationError(f"{str(path)!r} holds more than {MAX_FILES} files")
    files: dict[str, bytes] = {}
    for entry in entries:
        if entry.is_dir() and entry.name == HOOKS_DIR and not entry.is_symlink():
            files.update(_hook_files(entry))
            continue
        if entry.is_dir():
            raise ValidationError(
                f"{entry.name!r} in {str(path)!r} is a directory; a revision is a flat set "
                f"of .service, .socket, .timer and .env files, and its {HOOKS_DIR}/ folder"
            )
        files[entry.name] = _read_file(entry, path)
    return from_files(files)


def _hook_files(folder: Path) -> dict[str, bytes]:
    """The files of a revision's hooks/ folder, named `hooks/<name>` (no deeper folders)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise ValidationError(f"cannot read {str(folder)!r}: {exc.strerror or exc}") from exc
    if len(entries) > len(HOOK_NAMES) + 1:
        raise ValidationError(
            f"{str(folder)!r} holds {len(entries)} files; {HOOKS_DIR}/ holds the hook scripts "
            f"({', '.join(HOOK_NAMES)}) and {HOOK_TIMEOUTS} only"
        )
    files: dict[str, bytes] = {}
    for entry in entries:
        if entry.is_dir():
            raise ValidationError(
                f"{entry.name!r} in {str(folder)!r} is a directory; {HOOKS_DIR}/ holds the "
                f"hook scripts ({', '.join(HOOK_NAMES)}) and {HOOK_TIMEOUTS} only"
            )
        files[f"{HOOKS_DIR}/{entry.name}"] = _read_file(entry, folder)
    return files


def _read_file(entry: Path, path: Path) -> bytes:
    """One regular file of a revision's directory, at most MAX_FILE_BYTES."""
    _safe_file_name(entry.name)
    try:
        info = entry.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise ValidationError(
                f"{entry.name!r} in {str(path)!r} is not a regular file; a revision is a "
                "flat set of .service, .socket, .timer and .env files"
            )
        if info.st_size > MAX_FILE_BYTES:
            raise _too_large(entry.name)
        with entry.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ValidationError(f"cannot read {str(entry)!r}: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise _too_large(entry.name)
    return data


def from_tar(data: bytes) -> RevisionSources:
    """A tar archive (plain or compressed) of the files, e.g. `tar -C DIR -c .`."""
    if not data:
        raise ValidationError("standard input is empty; pipe a tar archive of the files into it")
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ValidationError(f"the archive is larger than {MAX_ARCHIVE_BYTES // 1024 // 1024} MB")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                if member.isdir():
                    if name.strip("/") in ("", ".", HOOKS_DIR):
                        continue
                    raise ValidationError(
                        f"the archive holds a directory {member.name!r}; archive the files "
                        "themselves, e.g. `tar -C DIR -c .`"
                    )
                if not member.isfile():
                    raise ValidationError(
                        f"{member.name!r} in the archive is not a regular file (links and "
                        "devices are refused)"
                    )
                folder, _, base = name.rpartition("/")
                if folder not in ("", HOOKS_DIR):
                    raise ValidationError(
                        f"{member.name!r} in the archive is inside a directory other than "
                        f"{HOOKS_DIR}/; archive the files themselves, e.g. `tar -C DIR -c .`"
                    )
                _safe_file_name(base)
                if member.size > MAX_FILE_BYTES:
                    raise _too_large(name)
                if name in files:
                    raise ValidationError(f"{name!r} appears twice in the archive")
                if len(files) >= MAX_FILES:
                    raise ValidationError(f"the archive holds more than {MAX_FILES} files")
                extracted = archive.extractfile(member)
                files[name] = extracted.read() if extracted is not None else b""
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValidationError(
            "standard input is not a readable tar archive; pipe one in, e.g. "
            "`tar -C DIR -c . | flotilla revision add SERVICE -`"
        ) from exc
    return from_files(files)


def from_files(files: Mapping[str, bytes]) -> RevisionSources:
    """The pure core: file name -> content, for a flat set of files (and `hooks/<name>`)."""
    units: dict[str, str] = {}
    env_files: dict[str, dict[str, str]] = {}
    hook_files: dict[str, str] = {}
    for name, data in sorted(files.items()):
        folder, _, base = name.rpartition("/")
        if folder not in ("", HOOKS_DIR):
            raise ValidationError(
                f"{name!r} is inside a directory other than {HOOKS_DIR}/; a revision is a flat "
                f"set of files and its {HOOKS_DIR}/ folder"
            )
        _safe_file_name(base)
        if len(data) > MAX_FILE_BYTES:
            raise _too_large(name)
        text = _text(name, data)
        if folder == HOOKS_DIR:
            hook_files[base] = text
        elif name.endswith(UNIT_SUFFIXES):
            units[unit_name(name)] = text
        elif name.endswith(ENV_SUFFIX) and len(name) > len(ENV_SUFFIX):
            env_files[name] = parse_env_file(name, text)
        else:
            raise ValidationError(
                f"unknown kind of file {name!r}: a revision holds .service, .socket, .timer "
                "and .env files only"
            )
    environments: dict[str, dict[str, str]] = {}
    generated: list[str] = []
    for name, variables in sorted(env_files.items()):
        stem = name[: -len(ENV_SUFFIX)]
        target = stem if stem.endswith(UNIT_SUFFIXES) else f"{stem}.service"
        if target in units:
            environments[target] = variables
        elif DOCKER_IMAGE in variables and not stem.endswith(UNIT_SUFFIXES):
            unit_name(target)
            units[target], environments[target] = docker_unit(name, stem, variables)
            generated.append(target)
        else:
            raise ValidationError(
                f"{name} has no unit: add {target}, or set {DOCKER_IMAGE} in it to run a container"
            )
        if environments[target] == {}:
            del environments[target]
    if not units:
        raise ValidationError(
            "no unit files found: a revision needs at least one .service, .socket or .timer "
            f"file, or an .env file with {DOCKER_IMAGE}"
        )
    return RevisionSources(units, environments, tuple(generated), read_hooks(hook_files))


def read_hooks(files: Mapping[str, str]) -> dict[str, Hook]:
    """The hooks of a revision's hooks/ folder: `before-stop`, `after-start` and `validate`
    scripts, and `timeouts` (`validate=60` lines; DEFAULT_HOOK_TIMEOUT_SECONDS otherwise)."""
    timeouts: dict[str, int] = {}
    if HOOK_TIMEOUTS in files:
        timeouts = _hook_timeouts(files[HOOK_TIMEOUTS])
    scripts = {name: text for name, text in files.items() if name != HOOK_TIMEOUTS}
    for name in sorted(scripts):
        if name not in HOOK_NAMES:
            raise ValidationError(
                f"unknown hook {HOOKS_DIR}/{name}: a revision's hooks are "
                f"{', '.join(HOOK_NAMES)} (and {HOOKS_DIR}/{HOOK_TIMEOUTS} for their timeouts)"
            )
    for name in sorted(timeouts):
        if name not in scripts:
            raise ValidationError(
                f"{HOOKS_DIR}/{HOOK_TIMEOUTS} sets a timeout for {name}, but there is no "
                f"{HOOKS_DIR}/{name}: add the hook or remove its timeout"
            )
    return {
        name: validation.hook(
            name, Hook(scripts[name], timeouts.get(name, DEFAULT_HOOK_TIMEOUT_SECONDS))
        )
        for name in HOOK_NAMES
        if name in scripts
    }


def _hook_timeouts(text: str) -> dict[str, int]:
    where = f"{HOOKS_DIR}/{HOOK_TIMEOUTS}"
    timeouts: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip(_ENV_BLANKS)
        if not line or line.startswith(("#", ";")):
            continue
        name, equals, value = (part.strip(_ENV_BLANKS) for part in line.partition("="))
        if not equals or name not in HOOK_NAMES or not re.fullmatch(r"[0-9]{1,6}", value):
            raise ValidationError(
                f"{where}, line {number}: expected HOOK=SECONDS with HOOK one of "
                f"{', '.join(HOOK_NAMES)}, e.g. validate=60"
            )
        if name in timeouts:
            raise ValidationError(f"{where}, line {number}: the timeout of {name} is set twice")
        timeouts[name] = int(value)
    return timeouts


def parse_env_file(name: str, text: str) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and `#`/`;` comments skipped; `export ` allowed;
    a value may be wrapped in single quotes (literal) or double quotes (\\ escapes)."""
    variables: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip(_ENV_BLANKS)
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip(_ENV_BLANKS)
        key, equals, value = line.partition("=")
        key = key.strip(_ENV_BLANKS)
        if not equals or not _ENV_KEY.fullmatch(key):
            # The line is not shown: it may hold a secret.
            raise ValidationError(
                f"{name}, line {number}: expected NAME=VALUE with a name of letters, digits "
                "and underscores"
            )
        variables[key] = _unquote(name, number, value.strip(_ENV_BLANKS))
    return environment_variables(name, variables)


def _unquote(name: str, number: int, value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r'\\(["\\`$])', r"\1", value[1:-1])
    if value[:1] in ("'", '"'):
        raise ValidationError(f"{name}, line {number}: a quoted value is not closed")
    return value


def _text(name: str, data: bytes) -> str:
    if b"\x00" in data:
        raise ValidationError(f"{name} is binary, not text; a revision holds text files only")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"{name} is not UTF-8 text (byte {exc.start}); a revision holds text files only"
        ) from exc


def _safe_file_name(name: str) -> str:
    if not _SAFE_FILE_NAME.fullmatch(name) or len(name) > 200:
        raise ValidationError(
            f"file name {name[:60]!r} is not allowed: use letters, digits and ':_.@-' only "
            "(no spaces, slashes or shell metacharacters)"
        )
    return name


def _too_large(name: str) -> ValidationError:
    return ValidationError(f"{name} is larger than {MAX_FILE_BYTES // 1024} KB")
