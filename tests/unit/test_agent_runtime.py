"""The agent's unit runtime: which one, and why, for every combination of what was asked,
whether the host runs systemd and whether the D-Bus bindings import; and the one line an
agent prints when the runtime it must use cannot work."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flotilla.cli import agent_runtime
from flotilla.cli.agent_runtime import PROCESS, SYSTEMD, RuntimeChoice, choose_runtime
from flotilla.cli.main import main
from flotilla.engine.errors import ConfigurationError, ValidationError

MISSING = "No module named 'pydbus'"
REFUSED_USAGE = "refused: usage"  # ValidationError, exit 2
REFUSED_SETUP = "refused: setup"  # ConfigurationError, exit 1

# (asked, --bus-address given, host runs systemd, bindings import) -> outcome, words in why
TABLE = [
    (None, False, False, True, PROCESS, "does not run systemd"),
    (None, False, False, False, PROCESS, "does not run systemd"),
    (None, False, True, True, SYSTEMD, "the host runs systemd"),
    (None, False, True, False, REFUSED_SETUP, "the host runs systemd"),
    (None, True, False, True, SYSTEMD, "--bus-address"),
    (None, True, False, False, REFUSED_SETUP, "--bus-address"),
    (None, True, True, True, SYSTEMD, "--bus-address"),
    (None, True, True, False, REFUSED_SETUP, "--bus-address"),
    (SYSTEMD, False, False, True, SYSTEMD, "--runtime systemd"),
    (SYSTEMD, False, False, False, REFUSED_SETUP, "--runtime systemd"),
    (SYSTEMD, False, True, True, SYSTEMD, "--runtime systemd"),
    (SYSTEMD, False, True, False, REFUSED_SETUP, "--runtime systemd"),
    (SYSTEMD, True, False, True, SYSTEMD, "--runtime systemd"),
    (SYSTEMD, True, False, False, REFUSED_SETUP, "--runtime systemd"),
    (SYSTEMD, True, True, True, SYSTEMD, "--runtime systemd"),
    (SYSTEMD, True, True, False, REFUSED_SETUP, "--runtime systemd"),
    (PROCESS, False, False, True, PROCESS, "--runtime process"),
    (PROCESS, False, False, False, PROCESS, "--runtime process"),
    (PROCESS, False, True, True, PROCESS, "although the host runs systemd"),
    (PROCESS, False, True, False, PROCESS, "although the host runs systemd"),
    (PROCESS, True, False, True, REFUSED_USAGE, "--bus-address"),
    (PROCESS, True, False, False, REFUSED_USAGE, "--bus-address"),
    (PROCESS, True, True, True, REFUSED_USAGE, "--bus-address"),
    (PROCESS, True, True, False, REFUSED_USAGE, "--bus-address"),
]


def test_the_table_covers_every_combination_once() -> None:
    every = set(
        itertools.product([None, SYSTEMD, PROCESS], [False, True], [False, True], [False, True])
    )
    assert sorted(map(str, (row[:4] for row in TABLE))) == sorted(map(str, every))


@pytest.mark.parametrize(("asked", "bus", "host", "bindings", "outcome", "why"), TABLE)
def test_the_runtime_choice(
    asked: str | None, bus: bool, host: bool, bindings: bool, outcome: str, why: str
) -> None:
    def choose() -> RuntimeChoice:
        return choose_runtime(
            asked,
            bus_address_given=bus,
            host_runs_systemd=host,
            missing_bindings=None if bindings else MISSING,
        )

    if outcome == REFUSED_USAGE:
        with pytest.raises(ValidationError) as refused:
            choose()
        assert "--runtime process" in refused.value.message
    elif outcome == REFUSED_SETUP:
        with pytest.raises(ConfigurationError) as refused:
            choose()
        message = refused.value.message
        assert why in message
        assert MISSING in message  # what is missing
        assert "pip install 'flotilla-deploy[systemd]'" in message  # and how to fix it
        assert "python3-gi" in message
        assert "--system-site-packages" in message
        assert "\n" not in message
    else:
        choice = choose()
        assert choice.kind == outcome
        assert why in choice.reason
        assert choice.describe().startswith(f"unit runtime: {outcome} (")


def run_agent_command(*args: str) -> tuple[int | None, str]:
    """`flotilla agent ARGS` in-process through the console script's main()."""
    code: int | None = None
    with CliRunner().isolation() as (_out, err, _):
        saved = sys.argv
        sys.argv = ["flotilla", "agent", *args]
        try:
            main()
        except SystemExit as exited:
            code = exited.code if isinstance(exited.code, int) else 1
        finally:
            sys.argv = saved
            sys.stderr.flush()
        return code, err.getvalue().decode()


AGENT = ["--service", "api", "--instance-id", "i-1", "--region", "us-east-1"]


@pytest.fixture
def systemd_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that runs systemd, as far as the agent's check can tell."""
    marker = tmp_path / "run-systemd-system"
    marker.mkdir()
    monkeypatch.setattr(agent_runtime, "SYSTEMD_RUNNING_DIR", marker)


@pytest.fixture
def no_bindings(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydbus cannot be imported (None in sys.modules makes `import pydbus` fail)."""
    monkeypatch.setitem(sys.modules, "pydbus", None)


@pytest.mark.usefixtures("systemd_host", "no_bindings")
def test_an_agent_on_a_systemd_host_without_bindings_stops_with_one_line() -> None:
    code, stderr = run_agent_command(*AGENT)
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: the agent runs units on systemd (the host runs systemd: ")
    assert "pydbus" in line
    assert "pip install 'flotilla-deploy[systemd]'" in line
    assert "Traceback" not in stderr


@pytest.mark.usefixtures("no_bindings")
def test_asking_for_systemd_without_bindings_stops_with_one_line() -> None:
    code, stderr = run_agent_command(*AGENT, "--runtime", "systemd")
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert "(--runtime systemd)" in line
    assert "flotilla-deploy[systemd]" in line


def test_a_bus_address_with_the_process_runtime_is_refused_in_one_line() -> None:
    code, stderr = run_agent_command(
        *AGENT, "--runtime", "process", "--bus-address", "unix:path=/nowhere"
    )
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: --bus-address")
    assert "--runtime process" in line
