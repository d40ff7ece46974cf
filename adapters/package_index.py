"""The package index's hashes of a release, from its simple API (PEP 691 JSON), as pip reads it.

`flotilla init` pins every dependency of the wheel it publishes to the version the operator
runs, with the sha256 of each file the index holds for that version (every platform's
wheel and the sdist): an instance's pip then installs exactly those releases, whatever its
Python or machine, and refuses a file the index did not publish (`--require-hashes`).

The index is read over HTTPS with the standard library; `FLOTILLA_PACKAGE_INDEX` names
another one (a mirror) that serves the same API at `<base>/<name>/`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Protocol

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from flotilla.engine.errors import ConfigurationError

PYPI = "https://pypi.org/simple"
INDEX_VARIABLE = "FLOTILLA_PACKAGE_INDEX"
_JSON = "application/vnd.pypi.simple.v1+json"
_TIMEOUT = 60.0  # seconds for one project's page (botocore's is about 2 MB)


class ReleaseHashes(Protocol):
    """What the dependency lock needs of an index (tests/contract checks both kinds)."""

    def release_hashes(self, name: str, version: str) -> tuple[str, ...]:
        """The sha256 (hex) of every file of `name` at `version`, sorted; a release the
        index does not hold raises ConfigurationError naming it."""
        ...


def index_from(environment: Mapping[str, str]) -> PackageIndex:
    return PackageIndex(environment.get(INDEX_VARIABLE) or PYPI)


class PackageIndex:
    """An index with the simple API at `base_url`."""

    def __init__(self, base_url: str = PYPI) -> None:
        scheme = urllib.parse.urlsplit(base_url).scheme
        if scheme not in ("https", "http"):
            raise ConfigurationError(
                f"{INDEX_VARIABLE}={base_url[:120]!r} is not an http(s) URL: give the base of "
                f"a simple API like {PYPI}"
            )
        self.base_url = base_url.rstrip("/")

    def release_hashes(self, name: str, version: str) -> tuple[str, ...]:
        project = canonicalize_name(name)
        release = f"{project} {version}"
        url = f"{self.base_url}/{urllib.parse.quote(project)}/"
        ask = urllib.request.Request(url, headers={"Accept": _JSON})  # noqa: S310 -- http(s), checked
        try:
            with urllib.request.urlopen(ask, timeout=_TIMEOUT) as answer:  # noqa: S310 -- as above
                kind = answer.headers.get_content_type()
                page = json.load(answer) if kind == _JSON else None
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise ConfigurationError(
                    f"{project} is not on the package index {self.base_url}: the instances "
                    "could not install it"
                ) from None
            raise ConfigurationError(
                f"the package index {self.base_url} answered {exc.code} for {project}"
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot read {project} from the package index {self.base_url}: {exc}"
            ) from None
        if page is None:
            raise ConfigurationError(
                f"the package index {self.base_url} answered {kind} for {project}, not the "
                f"JSON simple API (PEP 691): give {INDEX_VARIABLE} an index that serves it"
            )
        hashes = _hashes(page, project, version)
        if not hashes:
            raise ConfigurationError(
                f"{release} is not on the package index {self.base_url}: the instances could "
                "not install it; install a published release here"
            )
        return hashes


def _hashes(page: Any, project: str, version: str) -> tuple[str, ...]:
    """The sha256 of each file of the release. Yanked files stay: PEP 592 lets an exact
    pin install them, and the operator runs one."""
    wanted = Version(version)
    files = page.get("files", []) if isinstance(page, dict) else []
    found = set()
    for file in files:
        if not isinstance(file, dict) or not isinstance(file.get("hashes"), dict):
            continue
        digest = file["hashes"].get("sha256")
        if (
            isinstance(digest, str)
            and _file_version(str(file.get("filename", "")), project) == wanted
        ):
            found.add(digest.lower())
    return tuple(sorted(found))


def _file_version(filename: str, project: str) -> Version | None:
    """The version a wheel's or sdist's file name holds, if it is one of `project`'s."""
    try:
        if filename.endswith(".whl"):
            name, parsed, _, _ = parse_wheel_filename(filename)
        else:
            name, parsed = parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None  # an .egg, an .exe, a name pip would not read either
    return parsed if name == project else None
