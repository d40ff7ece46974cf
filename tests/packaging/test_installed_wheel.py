"""The product as a user gets it: the wheel and sdist built from this checkout, the wheel
installed into a clean virtualenv outside the tree, and every command run from there.

Every other suite runs on the editable install, which resolves `flotilla.*` to the source
folders and so cannot see a subpackage or a data file the wheel leaves out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from configparser import ConfigParser
from pathlib import Path

import pytest

from flotilla.cli import DISTRIBUTION

# Building two distributions and installing one with its dependencies (PyGObject compiles
# unless pip's cache holds it) runs inside the first test that needs it: more than the
# suite's 300 s per test allows on a cold cache.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]


def clean_environment() -> dict[str, str]:
    """What a user's shell has: none of the test bench's FLOTILLA_* or AWS settings."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLOTILLA_", "AWS_", "PYTHON", "VIRTUAL_ENV"))
    }


def run(
    *argv: str | Path, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=clean_environment() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out, ROOT,
                cwd=out)  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("flotilla_deploy-*-py3-none-any.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the wheel with the extras the demo needs; its bin/."""
    venv = tmp_path_factory.mktemp("venv")
    assert run(sys.executable, "-m", "venv", venv, cwd=venv).returncode == 0
    pip = run(venv / "bin" / "pip", "install", "--quiet", f"{wheel}[systemd,demo]", cwd=venv,
              timeout=1200)  # fmt: skip
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return venv / "bin"


def mapped_folders() -> dict[str, str]:
    """setup.cfg's package_dir: `flotilla.cli` -> `cli`, and so on."""
    config = ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    lines = config["options"]["package_dir"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines)


def source_packages() -> set[str]:
    """Every package of the checkout, found by walking the folders setup.cfg maps."""
    packages = set()
    for package, folder in mapped_folders().items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            packages.add(".".join((package, *relative)))
    return packages


def test_the_mapping_covers_every_top_level_package() -> None:
    """A new top-level package folder that setup.cfg does not map would never ship. Only
    the tests and their test bed (shared with the benchmarks, testbed/__init__.py) stay out."""
    top_level = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "testbed"}
    assert set(mapped_folders().values()) == top_level
    assert "flotilla.cli.demo" in source_packages()
    assert "flotilla.cli.trace" in source_packages()


def test_the_wheel_holds_every_package_and_its_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    in_wheel = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert in_wheel == source_packages()
    templates = {p.name for p in (ROOT / "cfn_templates").glob("*.yaml")}
    assert templates
    assert {f"flotilla/cfn_templates/{t}" for t in templates} <= names
    assert "flotilla/cli/flotilla-agent.service" in names
    assert "flotilla/cli/flotilla-keys.socket" in names
    # What the workers' user data installs beside the agent's unit (the metadata firewall).
    assert "flotilla/cli/flotilla-imds-firewall.service" in names
    assert "flotilla/cli/flotilla-imds-firewall.nft" in names
    typed = {f"{package.replace('.', '/')}/py.typed" for package, folder in
             mapped_folders().items() if (ROOT / folder / "py.typed").exists()}  # fmt: skip
    assert typed
    assert typed <= names
    assert not any(n.startswith(("tests/", "flotilla/tests/", "testbed/")) for n in names)
    (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
    assert f"Name: {DISTRIBUTION}" in zipfile.ZipFile(wheel).read(metadata).decode()


def test_the_sdist_builds_the_same_wheel(dist: Path, tmp_path: Path) -> None:
    (sdist,) = dist.glob("flotilla_deploy-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (tree,) = tmp_path.iterdir()
    rebuilt = run(sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "out", tree,
                  cwd=tmp_path)  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    (again,) = (tmp_path / "out").glob("*.whl")
    (first,) = dist.glob("*.whl")
    assert sorted(zipfile.ZipFile(again).namelist()) == sorted(zipfile.ZipFile(first).namelist())


def command_paths(bin_dir: Path, cwd: Path) -> list[list[str]]:
    """Every command and subcommand of the installed `flotilla`, found by walking it."""
    walk = (  # through click's API: the root group imports a command when asked for it
        "import json, click\n"
        "from flotilla.cli.main import cli\n"
        "def walk(group, path):\n"
        "    yield path\n"
        "    if isinstance(group, click.Group):\n"
        "        context = click.Context(group)\n"
        "        for name in group.list_commands(context):\n"
        "            yield from walk(group.get_command(context, name), [*path, name])\n"
        "print(json.dumps(list(walk(cli, []))))\n"
    )
    listed = run(bin_dir / "python", "-c", walk, cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


def test_the_installed_code_is_the_wheel_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = run(installed / "python", "-c", "import flotilla.cli; print(flotilla.cli.__file__)",
                cwd=tmp_path)  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert str(installed.parent) in where.stdout
    assert str(ROOT) not in where.stdout


def test_every_command_answers_help_from_the_install(installed: Path, tmp_path: Path) -> None:
    paths = command_paths(installed, tmp_path)
    assert ["agent"] in paths
    assert ["scheduler"] in paths
    assert ["demo"] in paths
    for path in paths:
        helped = run(installed / "flotilla", *path, "--help", cwd=tmp_path, timeout=60)
        assert helped.returncode == 0, (path, helped.stderr[-2000:])
        assert helped.stdout.startswith("Usage: flotilla"), (path, helped.stdout[:200])
        assert "Traceback" not in helped.stderr
    version = run(installed / "flotilla", "--version", cwd=tmp_path)
    assert version.stdout.startswith("flotilla, version ")


def test_aws_region_alone_is_a_region_from_the_install(installed: Path, tmp_path: Path) -> None:
    """What a worker's env file sets: AWS_REGION alone, which botocore does not read. With
    no credentials anywhere, the command must get past the region and stop at those."""
    env = {
        **clean_environment(),
        "AWS_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    listed = run(installed / "flotilla", "service", "list", "--endpoint-url",
                 "http://127.0.0.1:9", cwd=tmp_path, timeout=60, env=env)  # fmt: skip
    assert listed.returncode == 1
    assert "credentials" in listed.stderr
    assert "no AWS region" not in listed.stderr
    assert "Traceback" not in listed.stderr


def test_the_demo_runs_from_the_install(installed: Path, tmp_path: Path) -> None:
    """The demo starts the emulator, the scheduler and every agent as processes of the
    installed interpreter: this is their start-up from the wheel, against the emulator."""
    work = tmp_path / "work"
    ran = run(installed / "flotilla", "demo", "--json", "--instances", "2", "--workdir", work,
              cwd=tmp_path, timeout=280)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = json.loads(ran.stdout)
    assert {row["revision"] for row in summary["instances"]} == {"v2"}
    assert {row["http"] for row in summary["instances"]} == {"hello from v2"}
