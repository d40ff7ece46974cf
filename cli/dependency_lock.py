"""The pinned, hashed requirements published beside a wheel of Flotilla.

An instance installs the wheel with `pip install --require-hashes`: every dependency at
the version the operator runs here (the environment they tried), each with the sha256 of
every file the package index holds for that version, so any instance's pip takes exactly
those releases and refuses anything else (a newer upload, a typo-squatted name, a file the
index did not publish). The requirements are the wheel's own (`Requires-Dist`), and theirs
in turn, with markers decided for this Python. The `systemd` extra is left out: Debian and
Ubuntu give the bindings as distribution packages (the bootstrap installs them with apt).

Nothing here touches AWS: a dependency that is missing here, or installed at a version
the wheel does not accept, or not on the index, is refused before anything is published.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from flotilla.adapters.package_index import ReleaseHashes
from flotilla.engine.errors import ConfigurationError

FIRST_LINE = "# Pinned by Flotilla for {wheel}: install with pip install --require-hashes -r\n"
_PARALLEL_PAGES = 8  # the index's pages are read this many at a time


@dataclass(frozen=True)
class Pin:
    name: str  # canonical (PEP 503)
    version: str
    hashes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DependencyLock:
    """The requirements file's text and its sha256 (hex)."""

    text: str
    pins: tuple[Pin, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def lock_for(
    wheel_name: str,
    requires: Iterable[str],
    index: ReleaseHashes,
    installed: Callable[[str], metadata.Distribution] = metadata.distribution,
) -> DependencyLock:
    """The lock of a wheel whose METADATA says `requires`, from the distributions installed
    here (`installed`) and the hashes `index` publishes."""
    pins = installed_closure(requires, installed)
    with ThreadPoolExecutor(max_workers=_PARALLEL_PAGES) as pool:
        hashes = list(pool.map(lambda pin: index.release_hashes(pin.name, pin.version), pins))
    hashed = tuple(
        Pin(pin.name, pin.version, found) for pin, found in zip(pins, hashes, strict=True)
    )
    return DependencyLock(_text(wheel_name, hashed), hashed)


def installed_closure(
    requires: Iterable[str], installed: Callable[[str], metadata.Distribution]
) -> tuple[Pin, ...]:
    """Every distribution the requirements need, transitively, at its installed version,
    sorted by name; refused when one is missing or at a version a requirement excludes."""
    found: dict[str, Pin] = {}
    pending = [(_requirement(text, "the wheel"), "the wheel") for text in requires]
    pending = [(req, who) for req, who in pending if _applies(req, frozenset())]
    extras_seen: dict[str, set[str]] = {}
    while pending:
        requirement, needed_by = pending.pop()
        name = canonicalize_name(requirement.name)
        distribution = _installed(requirement, needed_by, installed)
        version = distribution.version
        if not requirement.specifier.contains(version, prereleases=True):
            raise ConfigurationError(
                f"{needed_by} needs {requirement}, and {name} {version} is installed here: "
                f"install the wheel here (pip install WHEEL) so the instances get what you run"
            )
        seen = extras_seen.setdefault(name, set())
        extras = set(requirement.extras) - seen
        if name in found and not extras:
            continue
        seen |= extras
        found[name] = Pin(name, version)
        for text in distribution.requires or ():
            child = _requirement(text, f"{name} {version}")
            if _applies(child, frozenset(seen)):
                pending.append((child, f"{name} {version}"))
    return tuple(found[name] for name in sorted(found))


def _requirement(text: str, needed_by: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise ConfigurationError(
            f"{needed_by} has a requirement pip cannot read: {text!r} ({exc})"
        ) from None


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    """Whether this Python needs it, for the base requirements and those of `extras`."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in {"", *extras})


def _installed(
    requirement: Requirement, needed_by: str, installed: Callable[[str], metadata.Distribution]
) -> metadata.Distribution:
    try:
        return installed(requirement.name)
    except metadata.PackageNotFoundError:
        raise ConfigurationError(
            f"{needed_by} needs {requirement}, which is not installed here: install the wheel "
            "here (pip install WHEEL) so its dependencies are pinned to what you run"
        ) from None


def _text(wheel_name: str, pins: tuple[Pin, ...]) -> str:
    lines = [FIRST_LINE.format(wheel=wheel_name)]
    for pin in pins:
        hashes = "".join(f" \\\n    --hash=sha256:{digest}" for digest in pin.hashes)
        lines.append(f"{pin.name}=={pin.version}{hashes}\n")
    return "".join(lines)
