"""An in-memory package index for the dependency lock's tests; it passes the same
contract suite as adapters.package_index against PyPI (tests/contract)."""

from __future__ import annotations

from collections.abc import Mapping

from packaging.utils import canonicalize_name
from packaging.version import Version

from flotilla.engine.errors import ConfigurationError


class InMemoryIndex:
    """`releases` maps a project name to {version: hashes}."""

    def __init__(self, releases: Mapping[str, Mapping[str, tuple[str, ...]]]) -> None:
        self._releases = {
            canonicalize_name(name): {Version(v): tuple(sorted(h)) for v, h in versions.items()}
            for name, versions in releases.items()
        }
        self.asked: list[tuple[str, str]] = []

    def release_hashes(self, name: str, version: str) -> tuple[str, ...]:
        self.asked.append((name, version))
        project = canonicalize_name(name)
        if project not in self._releases:
            raise ConfigurationError(f"{project} is not on the package index memory")
        hashes = self._releases[project].get(Version(version))
        if not hashes:
            raise ConfigurationError(f"{project} {version} is not on the package index memory")
        return hashes
