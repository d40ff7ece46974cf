"""The README's first command, as a test: `flotilla demo` converges, proves it, and leaves
no process behind. On real systemd (a private manager per simulated instance, as the demo
does as root), and once more on the process runtime, which a demo run without root uses."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.agents import FLOTILLA
from tests.support.systemd_manager import require_private_manager

pytestmark = pytest.mark.slow


def processes_mentioning(text: str) -> list[str]:
    """Processes whose command line, environment or working directory mention `text`:
    a private manager and its units name the work directory only in their environment
    (XDG_RUNTIME_DIR, HOME) and working directory (HOME), not in their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environment = (entry / "environ").read_bytes().decode(errors="replace")
            directory = os.readlink(entry / "cwd")
        except OSError:
            continue  # gone meanwhile
        if text in command or text in environment or text in directory:
            found.append(f"{entry.name}: {command}")
    return found


def run_demo(work: Path, *options: str) -> tuple[dict[str, object], str]:
    """The demo's JSON summary and its narration, after checking it cleaned up."""
    result = subprocess.run(
        [FLOTILLA, "demo", "--json", "--workdir", str(work), *options],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLOTILLA_")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert processes_mentioning(str(work)) == []  # agents, schedulers, managers, units
    assert not (work / "instances").exists()  # nor any environment file left behind
    return json.loads(result.stdout), result.stderr


def check_story(summary: dict[str, object], narration: str, instances: int) -> None:
    rows = summary["instances"]
    assert isinstance(rows, list)
    assert [row["instance"] for row in rows] == [f"demo-{n}" for n in range(1, instances + 1)]
    assert {row["revision"] for row in rows} == {"v2"}
    assert {row["http"] for row in rows} == {"hello from v2"}
    assert sum(row["resumed"] for row in rows) == 1  # the agent killed mid-deploy
    assert summary["secret_found_outside_env_files"] == []
    # The check looked somewhere, and found the secret where it belongs: one env file each.
    assert summary["secret_env_files"] == len(rows)
    assert summary["secret_places_checked"] > 20
    assert "'*' marks an instance assigned another revision" in narration  # the key, once
    assert narration.count("'*' marks") == 1
    assert "killed: deploy" in narration
    assert "resumed at starting" in narration
    assert "reverted" in narration
    assert "↻" in narration  # the trace shows the resume
    # What a subscriber to the events topic received, a line per event (docs/events.md).
    events = [line.split()[1] for line in narration.splitlines() if "[event] " in line]
    assert events.count("rollout_started") >= 3  # v1, the canary, v2, v3-broken
    assert events.count("rollout_complete") >= 3
    assert events.index("rollout_started") < events.index("rollout_complete")
    assert "rollout_failed" in events
    assert "rollout_reverted" in events
    assert "deploy_rolled_back" in events  # v3-broken's one deploy
    assert events.count("deploy_succeeded") >= instances  # v1 everywhere, at least
    assert "[event] rollout_started web: weights changed from {} to {v1=100}" in narration
    page = Path(str(summary["trace_html"]))
    assert page.stat().st_size > 1000


def test_the_demo_on_real_systemd_converges_proves_it_and_cleans_up(tmp_path: Path) -> None:
    require_private_manager()
    work = tmp_path / "demo"
    summary, narration = run_demo(work, "--instances", "3", "--runtime", "systemd")
    assert summary["runtime"] == "systemd"
    assert "one private `systemd --user` manager per instance" in narration
    check_story(summary, narration, 3)
    # One manager per instance, each with its log kept (run_demo saw them all stopped).
    managers = work / "managers"
    assert sorted(p.name for p in managers.iterdir()) == ["demo-1", "demo-2", "demo-3"]
    assert all((managers / name / "manager.log").exists() for name in ("demo-1", "demo-3"))


def test_the_demo_on_the_process_runtime_converges_too(tmp_path: Path) -> None:
    summary, narration = run_demo(tmp_path / "demo", "--instances", "2", "--runtime", "process")
    assert summary["runtime"] == "process"
    assert "Units run as local processes" in narration
    check_story(summary, narration, 2)
