"""The agent's and the scheduler's own units are hardened as far as their jobs allow,
scored by `systemd-analyze security --offline` (0 is the best, 10 the worst; both were
9.6 "UNSAFE" before). Whether they still work so hardened is shown on a booted machine
(tests/machine/test_booted_fleet.py runs both units from the templates' user data)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flotilla.adapters.templates import load_template

ROOT = Path(__file__).resolve().parents[2]
AGENT_UNIT = ROOT / "cli" / "flotilla-agent.service"


def exposure(unit: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def strings(node: Any) -> Iterator[str]:
    """Every string in a template's node (the user data is a string inside Fn::Sub)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def scheduler_unit(tmp_path: Path) -> Path:
    """The scheduler's unit as the environment stack's user data writes it."""
    template = load_template("environment.yaml")
    text = "\n".join(strings(template["Resources"]["SchedulerLaunchTemplate"]))
    found = re.search(
        r"cat > /etc/systemd/system/flotilla-scheduler.service <<'UNIT'\n(.*?)\n\s*UNIT\n",
        text,
        re.S,
    )
    assert found, "the scheduler's unit is not in its user data"
    unit = tmp_path / "flotilla-scheduler.service"
    unit.write_text("\n".join(line.strip() for line in found.group(1).splitlines()) + "\n")
    return unit


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        key, equals, value = line.partition("=")
        if equals and not line.startswith("#"):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_agent_keeps_only_the_capability_managing_units_needs() -> None:
    settings = directives(AGENT_UNIT)
    assert settings["CapabilityBoundingSet"] == ["CAP_SYS_ADMIN"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    # It writes the units' directory and its runtime directory (a tmpfs) only.
    assert settings["ReadWritePaths"] == ["-/run/systemd/system"]
    assert settings["RuntimeDirectory"] == ["flotilla"]
    assert exposure(AGENT_UNIT) <= 3.0


def test_the_scheduler_runs_as_nobody_with_no_capability(tmp_path: Path) -> None:
    unit = scheduler_unit(tmp_path)
    settings = directives(unit)
    assert settings["DynamicUser"] == ["yes"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert "ReadWritePaths" not in settings
    assert exposure(unit) <= 1.5


@pytest.mark.parametrize("name", ["agent", "scheduler"])
def test_an_unhardened_unit_scores_unsafe_so_the_scores_above_mean_something(
    name: str, tmp_path: Path
) -> None:
    unit = AGENT_UNIT if name == "agent" else scheduler_unit(tmp_path)
    bare = tmp_path / f"bare-{name}.service"
    kept = ("Description", "ExecStart", "Type", "Restart", "NotifyAccess")
    lines = [
        line
        for line in unit.read_text().splitlines()
        if line.startswith("[") or line.partition("=")[0] in kept
    ]
    bare.write_text("\n".join(lines) + "\n")
    assert exposure(bare) >= 9.0
