"""The wheel of the Flotilla this CLI runs, and wheels an operator names with --wheel.

What `flotilla init` and `service provision` publish by default is the exact Flotilla the
operator runs: installed from a wheel (a normal install), that wheel is rebuilt from the
installed distribution. Every file its RECORD lists inside site-packages goes back in,
checked against the hash pip recorded, except what pip added or derives at install time
(`__pycache__`/`.pyc`, INSTALLER, REQUESTED, direct_url.json, the console scripts, which
entry_points.txt recreates); a fresh WHEEL and RECORD are written. The archive is
deterministic (sorted entries, fixed timestamps and modes), so the same install always
gives the same bytes, hence the same sha256 and the same key in the bucket.

An editable install has no such files (they are the checkout, which may hold anything):
it is refused with the command that builds a real wheel.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path, PurePosixPath

import flotilla.cli
from flotilla.adapters.artifacts import WHEEL_FILE_NAME
from flotilla.cli import DISTRIBUTION
from flotilla.engine.errors import ConfigurationError, ValidationError

# The zip format cannot store times before 1980; every entry gets this one.
FIXED_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644  # a regular file, rw-r--r--
UNIX = 3  # ZipInfo.create_system: the mode bits are Unix ones
# Written by pip at install time, or recreated from entry_points.txt: not the wheel's.
INSTALL_TIME_FILES = frozenset({"INSTALLER", "REQUESTED", "direct_url.json", "RECORD", "WHEEL"})
GENERATOR = "flotilla (rebuilt from the installed distribution)"
RUNNING_MODULE = "flotilla/cli/__init__.py"  # a file every real install of Flotilla has
EDITABLE = (
    "this Flotilla is an editable install; build a wheel (python -m build --wheel) and "
    "pass it with --wheel dist/flotilla_deploy-{version}-py3-none-any.whl"
)


@dataclass(frozen=True)
class WheelFile:
    """A wheel of Flotilla on disk, checked: where it is and which version it holds."""

    path: Path
    version: str
    requires: tuple[str, ...] = ()  # its METADATA's Requires-Dist, as written


def canonical_name(name: str) -> str:
    """A project name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def escaped_name(name: str) -> str:
    """A project name as a wheel's file name spells it (`flotilla_deploy`)."""
    return re.sub(r"[-_.]+", "_", name).lower()


# --- a wheel the operator names ------------------------------------------------------------


def check_wheel(path: Path) -> WheelFile:
    """The file at `path`, if it is a readable wheel of Flotilla; else one clear refusal."""
    shown = str(path)[:200]
    if not path.is_file():
        raise ValidationError(f"--wheel {shown}: no such file")
    if not WHEEL_FILE_NAME.match(path.name) or len(path.stem.split("-")) not in (5, 6):
        raise ValidationError(
            f"--wheel {shown} is not a wheel: its name must be "
            "<name>-<version>-<python>-<abi>-<platform>.whl"
        )
    project, file_version = path.stem.split("-")[:2]
    if canonical_name(project) != canonical_name(DISTRIBUTION):
        raise ValidationError(
            f"--wheel {shown} is a wheel of {project!r}, not of {DISTRIBUTION}: give "
            "Flotilla's own wheel"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            found = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if len(found) != 1:
                raise ValidationError(
                    f"--wheel {shown} is not a wheel: it holds {len(found)} *.dist-info/METADATA "
                    "files, a wheel has one"
                )
            text = archive.read(found[0]).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValidationError(f"--wheel {shown} is not a readable zip archive ({exc})") from exc
    headers = HeaderParser().parsestr(text, headersonly=True)
    name = str(headers.get("Name", "")).strip()
    version = str(headers.get("Version", "")).strip()
    if canonical_name(name) != canonical_name(DISTRIBUTION):
        raise ValidationError(
            f"--wheel {shown} is a wheel of {name[:60] or 'no project'!r}, not of "
            f"{DISTRIBUTION}: give Flotilla's own wheel"
        )
    if version != file_version:
        raise ValidationError(
            f"--wheel {shown}: its METADATA says version {version[:40]!r}, its name "
            f"{file_version!r}; pip would refuse it"
        )
    return WheelFile(path, version, tuple(map(str, headers.get_all("Requires-Dist") or ())))


# --- the wheel the CLI runs ----------------------------------------------------------------


def running_distribution() -> metadata.Distribution:
    """The installed distribution whose files are the Flotilla running now.

    `metadata.distribution(DISTRIBUTION)` returns the first one on sys.path, which in a
    checkout can be its `flotilla_deploy.egg-info` (the current directory comes first for
    `python -m`); the one that counts is the one whose RECORD holds the running module.
    """
    running = Path(flotilla.cli.__file__).resolve()
    for distribution in metadata.distributions(name=DISTRIBUTION):
        if _is_editable(distribution):
            continue
        for file in distribution.files or []:
            if file.as_posix() == RUNNING_MODULE and (
                Path(str(distribution.locate_file(file))).resolve() == running
            ):
                return distribution
    raise ConfigurationError(EDITABLE.format(version=metadata.version(DISTRIBUTION)))


def _is_editable(distribution: metadata.Distribution) -> bool:
    text = distribution.read_text("direct_url.json")
    if not text:
        return False
    try:
        return bool(json.loads(text).get("dir_info", {}).get("editable", False))
    except (ValueError, AttributeError):
        return False


def rebuild_running_wheel(folder: Path) -> WheelFile:
    """Write the wheel of the running Flotilla into `folder`; refuse an editable install."""
    return rebuild_wheel(running_distribution(), folder)


def rebuild_wheel(distribution: metadata.Distribution, folder: Path) -> WheelFile:
    """Write the wheel `distribution` was installed from (as its RECORD says) into `folder`."""
    name = str(distribution.metadata["Name"])
    version = distribution.version
    info = _dist_info_folder(distribution)
    entries: dict[str, bytes] = {}
    for file in distribution.files or []:
        path = PurePosixPath(file.as_posix())
        if path.is_absolute() or ".." in path.parts:  # outside site-packages: scripts
            continue
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        if str(path.parent) == info and path.name in INSTALL_TIME_FILES:
            continue
        entries[str(path)] = _installed_bytes(distribution, file)
    tags = _tags(distribution)
    entries[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: {GENERATOR}\nRoot-Is-Purelib: true\n"
        + "".join(f"Tag: {tag}\n" for tag in tags)
    ).encode()
    target = folder / f"{escaped_name(name)}-{version}-{_tag_text(tags)}.whl"
    write_wheel(target, entries, record=f"{info}/RECORD")
    return WheelFile(target, version, tuple(distribution.requires or ()))


def _dist_info_folder(distribution: metadata.Distribution) -> str:
    for file in distribution.files or []:
        path = PurePosixPath(file.as_posix())
        if path.name == "METADATA" and path.parent.name.endswith(".dist-info"):
            return str(path.parent)
    raise ConfigurationError(
        f"the installed {DISTRIBUTION} lists no *.dist-info/METADATA: reinstall it from its "
        "wheel, or pass --wheel"
    )


def _installed_bytes(distribution: metadata.Distribution, file: metadata.PackagePath) -> bytes:
    where = Path(str(distribution.locate_file(file)))
    try:
        data = where.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"the installed {DISTRIBUTION} is missing {file.as_posix()} ({exc.strerror}): "
            "reinstall it, or pass --wheel"
        ) from exc
    recorded = file.hash
    if recorded is not None and recorded.mode == "sha256" and recorded.value != _b64_digest(data):
        raise ConfigurationError(
            f"the installed {file.as_posix()} is not what pip installed (its sha256 differs "
            "from RECORD): reinstall Flotilla, or pass --wheel"
        )
    return data


def _tags(distribution: metadata.Distribution) -> list[str]:
    text = distribution.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
    return sorted(set(tags)) or ["py3-none-any"]


def _tag_text(tags: list[str]) -> str:
    """The file name's tag part: `py3-none-any`, or compressed (`py2.py3-none-any`)."""
    parts = [tag.split("-") for tag in tags]
    return "-".join(".".join(sorted({p[i] for p in parts})) for i in range(3))


def _b64_digest(data: bytes) -> str:
    """RECORD's hash spelling: urlsafe base64 of the sha256, without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(target: Path, entries: Mapping[str, bytes], *, record: str) -> None:
    """A wheel of `entries` plus their RECORD, the same bytes for the same entries.

    The package's files come first and the .dist-info folder last, RECORD at the very end
    (as the wheel format recommends); each is deflated at a fixed level.
    """
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    order = sorted(entries, key=lambda n: (n.split("/", 1)[0].endswith(".dist-info"), n))
    for name in order:
        writer.writerow([name, f"sha256={_b64_digest(entries[name])}", len(entries[name])])
    writer.writerow([record, "", ""])
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in [*((n, entries[n]) for n in order), (record, rows.getvalue().encode())]:
            entry = zipfile.ZipInfo(name, FIXED_TIMESTAMP)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.create_system = UNIX
            entry.external_attr = FILE_MODE << 16
            archive.writestr(entry, data, compresslevel=9)
