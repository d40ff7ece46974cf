"""Finds the packages; everything else about the distribution is declared in setup.cfg.

setup.cfg maps each top-level folder into the `flotilla` namespace (`flotilla.cli = cli`),
and setuptools' `find:` cannot add that prefix, so a hand-written list used to name the
packages and silently left new subpackages out of the wheel. Here the list is derived from
that mapping: every folder with an `__init__.py` under a mapped folder is a package.

setuptools builds a wheel from whatever `build/lib` holds, and never removes what an
earlier build left there: a module deleted or moved since would still ship. So every
build starts from an empty `build/lib`.
"""

import shutil
from configparser import ConfigParser
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build import build

HERE = Path(__file__).parent


def mapped_folders() -> dict[str, str]:
    config = ConfigParser()
    config.read(HERE / "setup.cfg", encoding="utf-8")
    lines = config["options"]["package_dir"].strip().splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip())
    return {package.strip(): folder.strip() for package, folder in pairs}


def packages() -> list[str]:
    found = []
    for package, folder in mapped_folders().items():
        found.append(package)
        found += [f"{package}.{sub}" for sub in find_packages(where=str(HERE / folder))]
    return sorted(found)


class CleanBuild(build):
    """`build`, from an empty build folder (see the module's docstring)."""

    def run(self) -> None:
        shutil.rmtree(self.build_lib, ignore_errors=True)
        super().run()


setup(packages=packages(), cmdclass={"build": CleanBuild})
