"""`systemd-analyze verify` on a revision's unit files, where the CLI's machine has it.

systemd's own checker knows every key and every value syntax of its version, which
Flotilla's own checks (`engine.unit_checks`, always run) do not. Its findings become
`Problem`s and `engine.unit_checks.refuse` decides about them with ours. What it says
about *this* machine is left out, because the units run on the workers: a program that
is not installed here ("is not executable"), a unit they depend on that does not exist
here ("Unit docker.service not found") and what follows from those. A machine without
`systemd-analyze`, or one where it cannot run (no systemd in a container, a time-out),
gets Flotilla's checks alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from flotilla.engine.unit_checks import Problem

TIMEOUT_SECONDS = 20
_AT_LINE = re.compile(r"^(?P<path>/\S+?):(?P<line>\d+): (?P<message>.+)$")
_OF_UNIT = re.compile(r"^(?P<unit>[^\s:/]+): (?P<message>.+)$")
# Findings about the machine running the CLI, not about the unit file.
_HOST_ONLY = (
    "is not executable",
    "not found",
    "cannot be started",
    "Failed to create",
    "Failed to load",
)
_REFUSED = ("Refusing", "fatal error", "bad unit file setting")


def verify(units: Mapping[str, str], *, program: str | None = None) -> list[Problem]:
    """What `systemd-analyze verify` finds in `units` (empty when it is not available)."""
    analyze = program or shutil.which("systemd-analyze")
    if analyze is None or not units:
        return []
    with tempfile.TemporaryDirectory(prefix="flotilla-verify-") as root:
        paths = {}
        for name, text in units.items():
            path = Path(root) / name
            path.write_text(text, encoding="utf-8")
            paths[str(path)] = name
        try:
            done = subprocess.run(
                [analyze, "verify", "--man=no", "--generators=no", *sorted(paths)],
                capture_output=True,
                text=True,
                timeout=TIMEOUT_SECONDS,
                check=False,
                cwd=root,
            )
        except (OSError, subprocess.SubprocessError):
            return []  # it could not run here: Flotilla's own checks stand alone
    return parse(done.stdout + done.stderr, paths)


def parse(output: str, paths: Mapping[str, str]) -> list[Problem]:
    """The problems in `systemd-analyze verify`'s output; `paths` maps file to unit name."""
    units = set(paths.values())
    problems = []
    for line in output.splitlines():
        at_line = _AT_LINE.match(line)
        if at_line and at_line["path"] in paths:
            message = at_line["message"].rstrip(".")
            problems.append(
                Problem(
                    paths[at_line["path"]],
                    int(at_line["line"]),
                    f"systemd-analyze: {message}",
                    fatal="Neither a valid executable name" in message,
                )
            )
            continue
        of_unit = _OF_UNIT.match(line)
        if of_unit is None or of_unit["unit"] not in units:
            continue  # a summary line, or about systemd-analyze itself
        message = of_unit["message"]
        if any(word in message for word in _HOST_ONLY):
            continue
        problems.append(
            Problem(
                of_unit["unit"],
                None,
                f"systemd-analyze: {message.rstrip('.')}",
                fatal=any(word in message for word in _REFUSED),
            )
        )
    return problems
