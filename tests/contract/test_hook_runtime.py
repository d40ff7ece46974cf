"""The unit runtime's `run_hook`, on the contract suite's harnesses (test_unit_runtime.py):
a real systemd user manager (a transient unit), the process runtime and the memory one.

A hook's run ends by itself (its exit status) or at its timeout (stopped by the runtime),
its environment reaches it exactly and only through a root-only file, a run an agent
abandoned (it crashed or gave up waiting) is stopped before the hook runs again, and only
a hook's own unit name is accepted.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from flotilla.engine.errors import ValidationError
from flotilla.engine.hooks import hook_unit_name
from flotilla.engine.ports import HookCommand, HookResult

# The contract suite's three harnesses (memory_, process_, systemd_harness) are fixtures here too.
from tests.contract.test_unit_runtime import (  # noqa: F401
    REVISION_A,
    TRICKY_VALUES,
    Harness,
    memory_harness,
    process_harness,
    systemd_harness,
    wait_for,
)


@pytest.fixture(params=["systemd", "process", "memory"])
def harness(request: pytest.FixtureRequest) -> Harness:
    found: Harness = request.getfixturevalue(f"{request.param}_harness")
    return found


@pytest.fixture(params=["systemd", "process"])
def real_harness(request: pytest.FixtureRequest) -> Harness:
    """Only the runtimes that run processes (the memory runtime runs none)."""
    found: Harness = request.getfixturevalue(f"{request.param}_harness")
    return found


VALIDATE = hook_unit_name(REVISION_A, "validate")
SECRET = "hunter2-not-for-argv"


def nothing() -> None:
    return None


def run(harness: Harness, script: str, timeout: int = 60, **environment: str) -> HookResult:
    command = HookCommand(VALIDATE, script, timeout, {"TOKEN": SECRET, **environment})
    return harness.runtime.run_hook(command, between=nothing)


def test_a_hook_that_exits_0_succeeds(harness: Harness) -> None:
    result = run(harness, "exit 0\n")

    assert result == HookResult(VALIDATE, "success", 0, result.duration_seconds)
    assert result.succeeded
    assert result.duration_seconds >= 0


def test_a_hook_that_exits_non_zero_fails_with_its_status(harness: Harness) -> None:
    result = run(harness, "echo checking\nexit 3\n")

    assert (result.result, result.exit_status, result.succeeded) == ("exit-code", 3, False)


def test_a_hanging_hook_is_stopped_at_its_timeout(harness: Harness) -> None:
    marker = harness.work / "hang.pid"
    result = run(harness, f"echo $$ > {marker}\nexec sleep 600\n", timeout=1)

    assert (result.result, result.exit_status, result.succeeded) == ("timeout", None, False)
    assert result.duration_seconds >= 1
    if harness.kind != "memory":  # it ran, and nothing of it is left
        assert not Path(f"/proc/{int(marker.read_text())}").exists()


def test_the_hook_is_run_again_after_it_ended(harness: Harness) -> None:
    assert run(harness, "exit 4\n").exit_status == 4
    assert run(harness, "exit 0\n").succeeded  # the ended unit is cleared, not "exists"


def test_only_a_hooks_own_unit_name_is_accepted(harness: Harness) -> None:
    for name in ("flotilla-web-3f2a9c1b7d4e.service", "sshd.service", "flotilla-hook-x"):
        with pytest.raises(ValidationError, match="is not the name of a hook's unit"):
            harness.runtime.run_hook(HookCommand(name, "exit 0\n", 5, {}), between=nothing)


def test_a_script_with_a_shebang_runs_with_its_interpreter(real_harness: Harness) -> None:
    out = real_harness.work / "python.out"
    script = f"#!/usr/bin/env python3\nimport sys\nopen({str(out)!r}, 'w').write(sys.version)\n"

    assert run(real_harness, script).succeeded
    assert out.read_text().startswith("3.")


def test_the_environment_reaches_the_hook_exactly_through_a_root_only_file(
    real_harness: Harness,
) -> None:
    out = real_harness.work / "seen.json"
    started = real_harness.work / "started"
    script = (
        f"#!/usr/bin/env python3\nimport json, os, time\n"
        f"json.dump(dict(os.environ), open({str(out)!r}, 'w'))\n"
        f"open({str(started)!r}, 'w').close()\ntime.sleep(3)\n"
    )
    seen_files: list[str] = []

    def look() -> None:
        # While the hook runs: its files, its command line, and (systemd) its unit's
        # properties, which any local user can read over D-Bus.
        wait_for(started.exists)
        hook_dir = Path(str(real_harness.disk.environment_dir)).parent / "hooks"
        for path in hook_dir.iterdir():
            seen_files.append(f"{path.name} {oct(path.stat().st_mode & 0o777)}")
        assert oct(hook_dir.stat().st_mode & 0o777) == "0o700"
        command_lines = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True)
        assert SECRET not in command_lines.stdout
        if real_harness.kind == "systemd":
            shown = subprocess.run(
                ["systemctl", "--user", "show", VALIDATE],
                capture_output=True,
                text=True,
                env={**os.environ, "DBUS_SESSION_BUS_ADDRESS": real_harness.runtime.bus_address},  # type: ignore[attr-defined]
            )
            assert shown.returncode == 0, shown.stderr
            assert "EnvironmentFiles=" in shown.stdout
            assert SECRET not in shown.stdout

    looker = threading.Thread(target=look)
    looker.start()
    result = run(real_harness, script, **TRICKY_VALUES)
    looker.join()

    assert result.succeeded, result
    seen = json.loads(out.read_text())
    assert {key: seen.get(key) for key in TRICKY_VALUES} == TRICKY_VALUES
    assert seen["TOKEN"] == SECRET
    assert sorted(seen_files) == [f"{VALIDATE} 0o700", f"{VALIDATE}.env 0o600"]
    hook_dir = Path(str(real_harness.disk.environment_dir)).parent / "hooks"
    assert list(hook_dir.iterdir()) == []  # removed once the run ended


def test_output_goes_to_the_journal_not_into_the_result(real_harness: Harness) -> None:
    """systemd: the journal (a private journald here); the process runtime: its log file."""
    result = run(real_harness, 'echo "token is $TOKEN"\necho oops >&2\nexit 2\n')

    assert SECRET not in repr(result)
    assert real_harness.hook_output is not None
    wait_for(lambda: "oops" in real_harness.hook_output(VALIDATE))  # type: ignore[misc]
    assert real_harness.hook_output(VALIDATE) == [f"token is {SECRET}", "oops"]


def test_a_run_an_agent_abandoned_is_stopped_before_the_hook_runs_again(
    real_harness: Harness,
) -> None:
    marker = real_harness.work / "abandoned.pid"

    def crash() -> None:
        if marker.exists() and marker.read_text().strip():
            raise KeyboardInterrupt("the agent stops waiting here, as if it were killed")

    with pytest.raises(KeyboardInterrupt):
        real_harness.runtime.run_hook(
            HookCommand(VALIDATE, f"echo $$ > {marker}\nexec sleep 600\n", 600, {}), between=crash
        )
    left = int(marker.read_text())
    assert Path(f"/proc/{left}").exists(), "the abandoned run should still be going"

    again = real_harness.fresh().run_hook(
        HookCommand(VALIDATE, "exit 0\n", 60, {}), between=nothing
    )

    assert again.succeeded
    wait_for(lambda: not Path(f"/proc/{left}").exists() or _zombie(left))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True
