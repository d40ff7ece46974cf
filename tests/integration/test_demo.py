"""The README's first command, as a test: `flotilla demo` converges, proves it, and leaves
no process behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.agents import FLOTILLA

pytestmark = pytest.mark.slow


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if text in command:
            found.append(command)
    return found


def test_the_demo_converges_proves_it_and_cleans_up(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    result = subprocess.run(
        [FLOTILLA, "demo", "--instances", "3", "--json", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLOTILLA_")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    rows = summary["instances"]
    assert [row["instance"] for row in rows] == ["demo-1", "demo-2", "demo-3"]
    assert {row["revision"] for row in rows} == {"v2"}
    assert {row["http"] for row in rows} == {"hello from v2"}
    assert sum(row["resumed"] for row in rows) == 1  # the agent killed mid-deploy
    assert summary["secret_found_outside_env_files"] == []
    narration = result.stderr
    assert "killed: deploy" in narration
    assert "resumed at starting" in narration
    assert "reverted" in narration
    assert "↻" in narration  # the trace shows the resume
    page = Path(summary["trace_html"])
    assert page.stat().st_size > 1000
    assert processes_mentioning(str(work)) == []  # agents, schedulers and units all stopped
    assert not (work / "instances").exists()  # nor any environment file left behind
