"""The package index contract: PyPI itself (over its JSON simple API, as the operator's
`flotilla init` reads it) and the in-memory index the lock's tests use."""

from __future__ import annotations

import re

import pytest

from flotilla.adapters.package_index import PackageIndex, ReleaseHashes
from flotilla.engine.errors import ConfigurationError
from tests.support.package_index import InMemoryIndex

# six 1.16.0: one wheel and one sdist, published in 2021 and never changed.
SIX_1_16 = (
    "1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926",
    "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254",
)


@pytest.fixture(params=["pypi", "memory"])
def index(request: pytest.FixtureRequest) -> ReleaseHashes:
    if request.param == "pypi":
        return PackageIndex()
    return InMemoryIndex({"six": {"1.16.0": SIX_1_16, "1.17.0": ("ab" * 32,)}})


def test_a_release_has_the_hash_of_every_file_sorted(index: ReleaseHashes) -> None:
    assert index.release_hashes("six", "1.16.0") == SIX_1_16


def test_names_and_versions_are_compared_as_pip_compares_them(index: ReleaseHashes) -> None:
    assert index.release_hashes("Six", "1.16") == SIX_1_16


def test_an_unknown_version_is_refused_naming_it(index: ReleaseHashes) -> None:
    with pytest.raises(ConfigurationError, match=r"six 1\.16\.999 is not on the package index"):
        index.release_hashes("six", "1.16.999")


def test_an_unknown_project_is_refused_naming_it(index: ReleaseHashes) -> None:
    name = "flotilla-no-such-project-0f9e8d"
    with pytest.raises(ConfigurationError, match=re.escape(f"{name} is not on the package index")):
        index.release_hashes(name, "1.0")


def test_an_index_that_is_not_http_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="FLOTILLA_PACKAGE_INDEX='file:///x' is not an"):
        PackageIndex("file:///x")
