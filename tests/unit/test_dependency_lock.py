"""The pinned, hashed requirements published beside a wheel (cli.dependency_lock)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest

from flotilla.cli.dependency_lock import installed_closure, lock_for
from flotilla.engine.errors import ConfigurationError
from tests.support.package_index import InMemoryIndex

H = {name: (name[0] * 64,) for name in ("alpha", "beta", "gamma", "delta", "omega")}


def installed(
    tmp_path: Path, **projects: tuple[str, list[str]]
) -> Callable[[str], metadata.Distribution]:
    """Distributions on disk: name -> (version, Requires-Dist lines)."""
    found = {}
    for name, (version, requires) in projects.items():
        info = tmp_path / f"{name}-{version}.dist-info"
        info.mkdir()
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        lines += [f"Requires-Dist: {r}" for r in requires]
        (info / "METADATA").write_text("\n".join(lines) + "\n")
        found[name] = metadata.PathDistribution(info)

    def lookup(name: str) -> metadata.Distribution:
        key = name.lower().replace("_", "-")
        if key not in found:
            raise metadata.PackageNotFoundError(name)
        return found[key]

    return lookup


def test_every_requirement_is_pinned_transitively_at_its_installed_version(tmp_path: Path) -> None:
    here = installed(
        tmp_path,
        alpha=("1.2", ["beta>=2", 'gamma; python_version < "3"', "delta[fast]"]),
        beta=("2.5", []),
        gamma=("9", []),
        delta=("0.3", ['omega==4.0; extra == "fast"', 'gamma; extra == "slow"']),
        omega=("4.0", ["beta"]),
    )
    requires = ["Alpha>=1", 'beta; extra == "systemd"', 'gamma; extra == "dev"']
    pins = installed_closure(requires, here)
    assert [(p.name, p.version) for p in pins] == [
        ("alpha", "1.2"),
        ("beta", "2.5"),
        ("delta", "0.3"),
        ("omega", "4.0"),
    ]


def test_the_lock_names_every_file_hash_and_its_bytes_name_it(tmp_path: Path) -> None:
    here = installed(tmp_path, alpha=("1.2", ["beta"]), beta=("2.5", []))
    index = InMemoryIndex({"alpha": {"1.2": H["alpha"]}, "beta": {"2.5": ("b" * 64, "c" * 64)}})
    lock = lock_for("flotilla_deploy-0.1.0-py3-none-any.whl", ["alpha"], index, here)
    assert lock.text == (
        "# Pinned by Flotilla for flotilla_deploy-0.1.0-py3-none-any.whl: install with pip "
        "install --require-hashes -r\n"
        f"alpha==1.2 \\\n    --hash=sha256:{'a' * 64}\n"
        f"beta==2.5 \\\n    --hash=sha256:{'b' * 64} \\\n    --hash=sha256:{'c' * 64}\n"
    )
    again = lock_for("flotilla_deploy-0.1.0-py3-none-any.whl", ["alpha"], index, here)
    assert again.sha256 == lock.sha256  # the same environment, the same content address


def test_a_dependency_missing_here_is_refused_naming_who_needs_it(tmp_path: Path) -> None:
    here = installed(tmp_path, alpha=("1.2", ["beta>=2"]))
    with pytest.raises(
        ConfigurationError, match=r"alpha 1\.2 needs beta>=2, which is not installed here"
    ):
        installed_closure(["alpha"], here)


def test_an_installed_version_the_wheel_excludes_is_refused(tmp_path: Path) -> None:
    here = installed(tmp_path, alpha=("1.2", []))
    with pytest.raises(
        ConfigurationError, match=r"the wheel needs alpha>=2, and alpha 1\.2 is installed here"
    ):
        installed_closure(["alpha>=2"], here)


def test_a_release_the_index_lacks_is_refused(tmp_path: Path) -> None:
    here = installed(tmp_path, alpha=("1.2", []))
    index = InMemoryIndex({"alpha": {"1.1": H["alpha"]}})
    with pytest.raises(ConfigurationError, match=r"alpha 1\.2 is not on the package index"):
        lock_for("w.whl", ["alpha"], index, here)


def test_a_requirement_pip_cannot_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="the wheel has a requirement pip cannot read"):
        installed_closure(["alpha >>> 1"], installed(tmp_path))
