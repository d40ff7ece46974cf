"""The unit runtime contract: one suite, run against a real systemd, the process runtime
and the in-memory runtime.

`harness` is parametrized over `SystemdRuntime` talking to a private `systemd --user`
manager (started per test by tests/support/systemd_manager.py, a fraction of a second),
`ProcessRuntime` on a state directory, and `MemoryUnitRuntime` (the simulated machine of
the simulation and fault tests). Files are looked at through the harness (`files`), on
disk or in the memory machine. The memory runtime runs no program: its machine is told
what the programs these tests start do (`what_programs_do`), and the tests check what the
runtime makes of that. `start`'s settling rule (engine/ports.py) is tested here for all
three. The classes at the end hold what only some of them do: files on disk (modes,
inodes), processes (an environment reaching one), timers and dependencies, the manager
helper itself, refusing sockets. The port's `run_hook` is tested in test_hook_runtime.py,
on these same harnesses.

Longer than ~400 lines on purpose: it is the whole contract of one port, written once,
with the three harnesses it runs against; split, a rule would sit apart from the harness
that makes it checkable for each runtime.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flotilla.adapters import memory_runtime
from flotilla.adapters.memory_runtime import MemoryMachine, MemoryUnitRuntime
from flotilla.adapters.process_runtime import ProcessRuntime
from flotilla.adapters.systemd import SystemdRuntime
from flotilla.engine.activation import Verdict, judge
from flotilla.engine.errors import ConfigurationError, UnitFailedError, ValidationError
from flotilla.engine.hardening import DROP_IN_NAME, hardening_drop_in
from flotilla.engine.ports import UnitRuntime, UnitStatus
from flotilla.engine.unit_syntax import unit_settings
from flotilla.engine.units import installed_name, parse_environment_file
from tests.support.systemd_manager import PrivateSystemdManager, require_private_manager

REVISION_A = "3f2a9c1b7d4e" + "a" * 52
REVISION_B = "9c0ffee15bad" + "b" * 52
SLEEPER = "[Service]\nType=exec\nExecStart=/bin/sleep 300\n"
FOREIGN = "plain.service"
# Values that break naive quoting; each must reach the process exactly as given.
TRICKY_VALUES = {
    "SPACES": "  two  spaces  ",
    "QUOTES": "say \"hi\" and 'bye'",
    "DOLLARS": "$HOME ${HOME} $$ $(id) `id`",
    "BACKSLASHES": "a\\b\\\\c\\n\\",
    "NEWLINES": "line one\nline two\n",
    "CARRIAGE": "a\rb",
    "TABS": "\tx\t",
    "SPECIFIERS": "100%n %% %i",
    "HASH": "# not a comment ; nor this",
    "UNICODE": "ünïcødé ☃ 日本",
    "EQUALS": "a=b=c",
    "EMPTY": "",
    "CONTROL": "\x1b[0m\x7f",
}


@dataclass
class DiskFiles:
    """The unit and environment files of a runtime that writes them to disk."""

    unit_dir: Path
    environment_dir: Path

    def unit_text(self, name: str) -> str | None:
        path = self.unit_dir / name
        return path.read_text() if path.exists() else None

    def environment_path(self, name: str) -> str:
        return str(self.environment_dir / f"{name}.env")

    def environment_text(self, name: str) -> str | None:
        path = Path(self.environment_path(name))
        # Bytes, not text mode: universal newlines would turn a quoted "\r" into "\n".
        return path.read_bytes().decode() if path.exists() else None

    def environment_files(self) -> list[str]:
        return sorted(os.listdir(self.environment_dir)) if self.environment_dir.exists() else []

    def drop_ins(self) -> dict[str, str]:
        """Flotilla's sandbox drop-in of each unit, by unit name."""
        found = self.unit_dir.glob(f"*.d/{DROP_IN_NAME}")
        return {path.parent.name.removesuffix(".d"): path.read_text() for path in found}


@dataclass
class MachineFiles:
    """The same view of the files a memory machine holds."""

    machine: MemoryMachine

    def unit_text(self, name: str) -> str | None:
        return self.machine.unit_files.get(name)

    def environment_path(self, name: str) -> str:
        return f"{memory_runtime.ENVIRONMENT_DIR}/{name}.env"

    def environment_text(self, name: str) -> str | None:
        return self.machine.environment_files.get(f"{name}.env")

    def environment_files(self) -> list[str]:
        return sorted(self.machine.environment_files)

    def drop_ins(self) -> dict[str, str]:
        return dict(self.machine.drop_ins)


@dataclass
class Harness:
    """One runtime implementation, ready for a test, with ways to look behind it."""

    kind: str
    runtime: UnitRuntime
    files: DiskFiles | MachineFiles
    work: Path  # scratch space for what units write
    fresh: Callable[[], UnitRuntime]  # the same machine seen by a restarted agent
    start_foreign: Callable[[str], None]  # a unit (or process) Flotilla does not own
    foreign_running: Callable[[str], bool]
    # What a hook's unit printed: systemd's journal, the process runtime's log file.
    hook_output: Callable[[str], list[str]] | None = None

    @property
    def disk(self) -> DiskFiles:
        """The files on disk, for the tests only runtimes that write files run."""
        assert isinstance(self.files, DiskFiles), f"the {self.kind} runtime writes no files"
        return self.files


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


@pytest.fixture
def systemd_harness(tmp_path: Path) -> Iterator[Harness]:
    require_private_manager()
    # With a journal: a hook's output goes there (test_hook_runtime.py reads it).
    with PrivateSystemdManager(journal=True) as manager:

        def make() -> SystemdRuntime:
            return SystemdRuntime(
                bus_address=manager.bus_address,
                unit_dir=manager.unit_dir,
                environment_dir=tmp_path / "env",
            )

        def start_foreign(name: str) -> None:
            (manager.unit_dir / name).write_text(SLEEPER)
            for command in (["daemon-reload"], ["start", name]):
                done = manager.systemctl(*command)
                assert done.returncode == 0, done.stderr

        def foreign_running(name: str) -> bool:
            active = manager.systemctl("is-active", name).stdout.strip() == "active"
            return active and (manager.unit_dir / name).exists()

        runtime = make()
        (tmp_path / "work").mkdir()
        try:
            yield Harness(
                "systemd",
                runtime,
                DiskFiles(manager.unit_dir, tmp_path / "env"),
                tmp_path / "work",
                make,
                start_foreign,
                foreign_running,
                lambda unit: manager.journal_lines(unit.removesuffix(".service")),
            )
        finally:
            runtime.close()


@pytest.fixture
def process_harness(tmp_path: Path) -> Iterator[Harness]:
    state_dir = tmp_path / "state"
    runtime = ProcessRuntime(state_dir)
    foreign: dict[str, subprocess.Popen[bytes]] = {}

    def start_foreign(name: str) -> None:
        # Nothing owns it but the test: a file among the runtime's units and a process.
        (state_dir / "units").mkdir(parents=True, exist_ok=True)
        (state_dir / "units" / name).write_text(SLEEPER)
        foreign[name] = subprocess.Popen(["/bin/sleep", "300"])

    def foreign_running(name: str) -> bool:
        return foreign[name].poll() is None and (state_dir / "units" / name).exists()

    (tmp_path / "work").mkdir()
    try:
        yield Harness(
            "process",
            runtime,
            DiskFiles(state_dir / "units", state_dir / "env"),
            tmp_path / "work",
            lambda: ProcessRuntime(state_dir),
            start_foreign,
            foreign_running,
            lambda unit: (state_dir / "log" / f"{unit}.log").read_text().splitlines(),
        )
    finally:
        runtime.stop(runtime.owned_units())
        for process in foreign.values():
            process.kill()
            process.wait()


# What the programs the tests start do, for the memory machine, which runs none: the exit
# status each ends with at once, or None if it keeps running.
_EXIT_STATUS = {"/bin/false": 1, "/bin/true": 0, "/bin/touch": 0, "/nonexistent/binary": 203}


def what_programs_do(_name: str, text: str) -> int | None:
    [command] = [v for s, k, v in unit_settings(text) if (s, k) == ("Service", "ExecStart")]
    program, *arguments = shlex.split(command)
    if program == "/bin/sh":  # only `sh -c '... exit N'` here
        return int(re.findall(r"exit (\d+)", arguments[-1])[-1])
    return _EXIT_STATUS.get(program)  # /bin/sleep, and a program that reports, keep running


def what_hooks_do(_unit: str, script: str) -> int | None:
    """A hook's script for the memory machine: `exit N` ends it with N, `sleep` hangs."""
    if "sleep" in script:
        return None
    found = re.findall(r"exit (\d+)", script)
    return int(found[-1]) if found else 0


@pytest.fixture
def memory_harness(tmp_path: Path) -> Harness:
    machine = MemoryMachine(exits=what_programs_do, hook_exits=what_hooks_do)

    def start_foreign(name: str) -> None:
        # Another unit on the same machine: its file and its running state, nothing of ours.
        machine.unit_files[name] = SLEEPER
        machine.states[name] = UnitStatus(name, "active", "running", "success")

    def foreign_running(name: str) -> bool:
        return machine.states[name].active_state == "active" and name in machine.unit_files

    (tmp_path / "work").mkdir()
    return Harness(
        "memory",
        MemoryUnitRuntime(machine),
        MachineFiles(machine),
        tmp_path / "work",
        lambda: MemoryUnitRuntime(machine),
        start_foreign,
        foreign_running,
    )


@pytest.fixture(params=["systemd", "process", "memory"])
def harness(request: pytest.FixtureRequest) -> Harness:
    found: Harness = request.getfixturevalue(f"{request.param}_harness")
    return found


@pytest.fixture(params=["systemd", "process"])
def real_harness(request: pytest.FixtureRequest) -> Harness:
    """Only the runtimes that write files and run processes (the memory runtime does not)."""
    found: Harness = request.getfixturevalue(f"{request.param}_harness")
    return found


def env_dumper(harness: Harness, out: Path) -> str:
    """A unit that writes the environment it sees to `out` (JSON), then keeps running."""
    script = harness.work / "dump_env.py"
    script.write_text(
        "import json, os, sys\n"
        "with open(sys.argv[1] + '.tmp', 'w') as f:\n"
        "    json.dump(dict(os.environ), f)\n"
        "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "os.execv('/bin/sleep', ['sleep', '300'])\n"
    )
    return f'[Service]\nType=exec\nExecStart="{sys.executable}" "{script}" "{out}"\n'


def seen_environment(out: Path) -> dict[str, str]:
    wait_for(out.exists)
    seen: dict[str, str] = json.loads(out.read_text())
    return seen


def states(harness: Harness, names: list[str]) -> list[tuple[str, str]]:
    return [(s.active_state, s.sub_state) for s in harness.runtime.status(names)]


# The contract.


def test_installed_units_start_and_are_exactly_the_owned_ones(harness: Harness) -> None:
    runtime = harness.runtime
    names = runtime.install(REVISION_A, {"web.service": SLEEPER, "worker.service": SLEEPER}, {})

    runtime.start(names)

    assert names == [
        installed_name("web.service", REVISION_A),
        installed_name("worker.service", REVISION_A),
    ]
    assert names == ["flotilla-web-3f2a9c1b7d4e.service", "flotilla-worker-3f2a9c1b7d4e.service"]
    assert states(harness, names) == [("active", "running")] * 2
    assert [s.result for s in runtime.status(names)] == ["success"] * 2
    assert runtime.owned_units() == names


def test_every_operation_twice_is_harmless(harness: Harness) -> None:
    runtime = harness.runtime
    units = {"web.service": SLEEPER}
    environments = {"web.service": {"TOKEN": "s3cret"}}
    names = runtime.install(REVISION_A, units, environments)
    files = harness.files
    installed = (files.unit_text(names[0]), files.environment_text(names[0]))

    assert runtime.install(REVISION_A, units, environments) == names
    assert (files.unit_text(names[0]), files.environment_text(names[0])) == installed
    runtime.start(names)
    runtime.start(names)
    assert states(harness, names) == [("active", "running")]
    runtime.stop(names)
    runtime.stop(names)
    assert states(harness, names) == [("inactive", "dead")]
    runtime.remove(names)
    runtime.remove(names)

    assert runtime.owned_units() == []
    assert files.unit_text(names[0]) is None
    assert files.environment_text(names[0]) is None


def test_each_service_gets_its_sandbox_drop_in_and_its_removal_takes_it(
    harness: Harness,
) -> None:
    """The default sandbox (engine/hardening.py) sits beside every installed service and
    goes with it; a revision's own setting stays out of it; the switch leaves none."""
    runtime, files = harness.runtime, harness.files
    own = "[Service]\nType=exec\nExecStart=/bin/sleep 300\nProtectSystem=strict\n"
    bare = "[Service]\nType=exec\nExecStart=/bin/sleep 300\nX-Flotilla-Hardening=no\n"
    units = {"web.service": SLEEPER, "own.service": own, "bare.service": bare}
    names = runtime.install(REVISION_A, units, {})
    web, own_name, bare_name = (installed_name(unit, REVISION_A) for unit in units)

    assert files.drop_ins() == {
        web: hardening_drop_in("web.service", SLEEPER),
        own_name: hardening_drop_in("own.service", own),
    }
    assert "ProtectSystem=full" in files.drop_ins()[web]
    assert "ProtectSystem" not in files.drop_ins()[own_name]
    runtime.start(names)
    assert states(harness, names) == [("active", "running")] * 3

    runtime.stop(names)
    runtime.remove([web, bare_name])
    assert files.drop_ins() == {own_name: hardening_drop_in("own.service", own)}
    runtime.remove([own_name])
    assert files.drop_ins() == {}


def test_a_rollback_leaves_exactly_the_previous_drop_ins(harness: Harness) -> None:
    runtime, files = harness.runtime, harness.files
    first = {"web.service": SLEEPER, "worker.service": SLEEPER}
    second = {
        "web.service": SLEEPER + "# b\n",
        "api.service": SLEEPER + "X-Flotilla-Hardening=no\n",
    }
    old = runtime.install(REVISION_A, first, {})
    before = files.drop_ins()
    assert sorted(before) == old

    new = runtime.install(REVISION_B, second, {})
    runtime.remove(old)
    assert sorted(files.drop_ins()) == [installed_name("web.service", REVISION_B)]
    runtime.install(REVISION_A, first, {})  # the rollback
    runtime.remove(new)

    assert files.drop_ins() == before


def test_a_unit_never_installed_is_inactive_and_stopping_it_is_fine(harness: Harness) -> None:
    ghost = installed_name("ghost.service", REVISION_A)

    assert states(harness, [ghost]) == [("inactive", "dead")]
    harness.runtime.stop([ghost])
    harness.runtime.remove([ghost])
    assert harness.runtime.owned_units() == []


def test_units_flotilla_does_not_own_are_never_touched(harness: Harness) -> None:
    runtime = harness.runtime
    harness.start_foreign(FOREIGN)
    names = runtime.install(REVISION_A, {"web.service": SLEEPER}, {})
    runtime.start(names)

    for not_ours in ([FOREIGN], ["flotilla-web.service"], [names[0], FOREIGN]):
        for refused in (runtime.stop, runtime.remove, runtime.start):
            with pytest.raises(ValidationError, match="only stops or removes the units it"):
                refused(not_ours)
    assert runtime.owned_units() == names
    assert states(harness, names) == [("active", "running")], "refused lists touch nothing"

    runtime.stop(runtime.owned_units())
    runtime.remove(runtime.owned_units())
    assert runtime.owned_units() == []
    assert harness.foreign_running(FOREIGN)


def test_references_to_units_of_others_stay_and_do_not_block(harness: Harness) -> None:
    unit = "[Unit]\nAfter=docker.service\nWants=nonexistent-foreign.service\n" + SLEEPER
    names = harness.runtime.install(REVISION_A, {"web.service": unit}, {})

    harness.runtime.start(names)

    assert states(harness, names) == [("active", "running")]
    installed = harness.files.unit_text(names[0])
    assert installed is not None
    assert "After=docker.service\nWants=nonexistent-foreign.service\n" in installed


def test_each_unit_has_its_own_environment_file(harness: Harness) -> None:
    environments = {
        "web.service": {"WEB_TOKEN": "w e b", "SHARED": "web's"},
        "db.service": {"DB_PASSWORD": 'p"a$s\\s', "SHARED": "db's"},
    }
    names = harness.runtime.install(
        REVISION_A, {"web.service": SLEEPER, "db.service": SLEEPER}, environments
    )

    for unit, variables in environments.items():
        name = installed_name(unit, REVISION_A)
        text = harness.files.environment_text(name)
        assert text is not None
        assert parse_environment_file(text) == variables
        assert f"EnvironmentFile={harness.files.environment_path(name)}\n" in (
            harness.files.unit_text(name) or ""
        )
    assert harness.files.environment_files() == [f"{name}.env" for name in names]


def test_environment_files_keep_every_value_exactly(harness: Harness) -> None:
    names = harness.runtime.install(
        REVISION_A, {"web.service": SLEEPER}, {"web.service": TRICKY_VALUES}
    )

    text = harness.files.environment_text(names[0])
    assert text is not None
    assert parse_environment_file(text) == TRICKY_VALUES


def test_an_environment_for_a_unit_not_in_the_revision_is_refused(harness: Harness) -> None:
    with pytest.raises(ValidationError, match="does not contain"):
        harness.runtime.install(
            REVISION_A, {"web.service": SLEEPER}, {"db.service": {"PASSWORD": "hunter2"}}
        )

    assert harness.runtime.owned_units() == []
    assert harness.files.environment_files() == []


def test_a_unit_that_cannot_load_fails_to_start(harness: Harness) -> None:
    names = harness.runtime.install(REVISION_A, {"web.service": "[Service]\nType=exec\n"}, {})

    with pytest.raises(UnitFailedError) as failed:
        harness.runtime.start(names)

    assert failed.value.unit == names[0]
    assert failed.value.result == "bad-setting"
    assert harness.runtime.owned_units() == names


@pytest.mark.parametrize(
    ("service", "exit_status"),
    [
        ("[Service]\nType=exec\nExecStart=/bin/false\n", 1),
        ("[Service]\nType=simple\nExecStart=/bin/sh -c 'exit 3'\n", 3),
        ("[Service]\nType=exec\nExecStart=/nonexistent/binary\n", 203),
    ],
    ids=["exec-false", "simple-exit-3", "exec-missing-binary"],
)
def test_a_unit_that_exits_at_once_fails_to_start(
    harness: Harness, service: str, exit_status: int
) -> None:
    runtime = harness.runtime
    names = runtime.install(REVISION_A, {"web.service": service}, {})

    with pytest.raises(UnitFailedError) as failed:
        runtime.start(names)

    assert (failed.value.unit, failed.value.result) == (names[0], "exit-code")
    assert failed.value.exit_status == exit_status
    assert f"exit status {exit_status}" in failed.value.message
    [status] = runtime.status(names)
    assert (status.active_state, status.result, status.exit_status) == (
        "failed",
        "exit-code",
        exit_status,
    )
    assert runtime.owned_units() == names, "a failed unit stays listed until removed"
    runtime.stop(names)
    runtime.remove(names)
    assert runtime.owned_units() == []


def test_siblings_are_renamed_within_their_own_revision(harness: Harness) -> None:
    runtime = harness.runtime
    web = "[Unit]\nRequires=db.service\nAfter=db.service docker.service\n" + SLEEPER
    units = {"web.service": web, "db.service": SLEEPER}
    first = runtime.install(REVISION_A, units, {"web.service": {"WHO": "a"}})
    second = runtime.install(REVISION_B, units, {"web.service": {"WHO": "b"}})

    for revision, other in ((REVISION_A, REVISION_B), (REVISION_B, REVISION_A)):
        text = harness.files.unit_text(installed_name("web.service", revision))
        assert text is not None
        own_db, other_db = (installed_name("db.service", r) for r in (revision, other))
        assert f"Requires={own_db}\nAfter={own_db} docker.service\n" in text
        assert other_db not in text
        env_file = harness.files.environment_path(installed_name("web.service", revision))
        assert f"EnvironmentFile={env_file}\n" in text
    runtime.start(first)
    assert states(harness, first) == [("active", "running")] * 2
    assert states(harness, second) == [("inactive", "dead")] * 2
    assert runtime.owned_units() == sorted(first + second)


def main_pids(harness: Harness, names: list[str]) -> list[int | None]:
    return [status.main_pid for status in harness.runtime.status(names)]


def test_a_kept_unit_keeps_its_main_process_and_its_name(harness: Harness) -> None:
    """Issue 15: a deploy installs a revision with an unchanged unit under the name it runs
    under; installing and starting again leaves its main process alone."""
    runtime = harness.runtime
    web = "[Unit]\nAfter=db.service\n" + SLEEPER
    first = runtime.install(REVISION_A, {"web.service": web, "db.service": SLEEPER}, {})
    runtime.start(first)
    before = main_pids(harness, first)
    assert all(pid is not None for pid in before)
    kept_db = installed_name("db.service", REVISION_A)

    second = runtime.install(
        REVISION_B, {"web.service": web, "db.service": SLEEPER}, {}, {"db.service": kept_db}
    )
    new_web = installed_name("web.service", REVISION_B)
    assert second == sorted([kept_db, new_web])
    text = harness.files.unit_text(new_web)
    assert text is not None
    assert f"After={kept_db}\n" in text
    runtime.start(second)  # the kept one is active already: nothing happens to it
    runtime.stop([installed_name("web.service", REVISION_A)])

    assert main_pids(harness, [kept_db]) == [before[0]]
    assert states(harness, second) == [("active", "running")] * 2
    restarted = main_pids(harness, [new_web])[0]
    assert restarted is not None
    assert restarted not in before
    with pytest.raises(ValidationError):  # only an owned name of that very unit
        runtime.install(REVISION_B, {"web.service": web}, {}, {"web.service": kept_db})


def test_a_restarted_agent_finds_and_stops_the_units(harness: Harness) -> None:
    names = harness.runtime.install(REVISION_A, {"web.service": SLEEPER}, {})
    harness.runtime.start(names)

    restarted = harness.fresh()

    assert restarted.owned_units() == names
    assert [s.active_state for s in restarted.status(names)] == ["active"]
    restarted.stop(names)
    assert states(harness, names) == [("inactive", "dead")]


def test_a_unit_removed_while_running_is_still_owned_until_stopped(harness: Harness) -> None:
    names = harness.runtime.install(REVISION_A, {"web.service": SLEEPER}, {})
    harness.runtime.start(names)

    harness.runtime.remove(names)

    assert harness.runtime.owned_units() == names
    harness.runtime.stop(names)
    assert harness.runtime.owned_units() == []


# The settling rule of `UnitRuntime.start` (engine/ports.py).

ONESHOT = "[Service]\nType=oneshot\nExecStart={}\n"
KEPT_ONESHOT = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"


def failure_text(status: UnitStatus) -> str:
    """How the one failure message (engine.activation.unit_failure) shows a unit's state."""
    exit_note = "" if status.exit_status is None else f", exit status {status.exit_status}"
    return f"{status.active_state}/{status.sub_state}, result {status.result}{exit_note}"


def test_start_returns_once_every_unit_has_settled(harness: Harness) -> None:
    units = {
        "web.service": SLEEPER,
        "migrate.service": ONESHOT.format("/bin/sleep 0.3"),  # start waits for it to end
        "setup.service": KEPT_ONESHOT,
    }
    names = harness.runtime.install(REVISION_A, units, {})

    harness.runtime.start(names)

    web, migrate, setup = (installed_name(unit, REVISION_A) for unit in units)
    found = {status.name: status for status in harness.runtime.status(names)}
    assert (found[web].active_state, found[web].sub_state) == ("active", "running")
    assert (found[migrate].active_state, found[migrate].result) == ("inactive", "success")
    assert (found[setup].active_state, found[setup].sub_state) == ("active", "exited")
    oneshots = {migrate, setup}
    for status in found.values():
        assert judge(status, run_once=status.name in oneshots) is Verdict.WELL


@pytest.mark.parametrize(
    ("service", "exit_status"),
    [
        (ONESHOT.format("/bin/false"), 1),
        ("[Service]\nType=exec\nExecStart=/bin/sh -c 'sleep 0.1; exit 4'\n", 4),
    ],
    ids=["oneshot-fails", "stops-within-the-settle-period"],
)
def test_a_unit_that_does_not_settle_well_fails_start_with_the_one_message(
    harness: Harness, service: str, exit_status: int
) -> None:
    names = harness.runtime.install(REVISION_A, {"web.service": service}, {})

    with pytest.raises(UnitFailedError) as failed:
        harness.runtime.start(names)

    [status] = harness.runtime.status(names)
    assert (status.active_state, status.result, status.exit_status) == (
        "failed",
        "exit-code",
        exit_status,
    )
    assert (failed.value.unit, failed.value.result, failed.value.exit_status) == (
        names[0],
        "exit-code",
        exit_status,
    )
    assert failed.value.message.startswith(f"unit {names[0]} failed to start")
    assert failure_text(status) in failed.value.message


# What only the runtimes with files on disk and real processes do. The memory runtime keeps
# a machine's files in dicts (no modes, inodes or directories to check) and runs no process
# (no environment reaches one): the tests above check its files through the same view.


class TestFilesOnDisk:
    def test_installing_again_rewrites_no_file(self, real_harness: Harness) -> None:
        runtime, disk = real_harness.runtime, real_harness.disk
        units = {"web.service": SLEEPER}
        environments = {"web.service": {"TOKEN": "s3cret"}}
        names = runtime.install(REVISION_A, units, environments)
        files = [
            disk.unit_dir / names[0],
            disk.environment_dir / f"{names[0]}.env",
            disk.unit_dir / f"{names[0]}.d" / DROP_IN_NAME,
        ]
        before = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files]

        assert runtime.install(REVISION_A, units, environments) == names
        assert [(f.stat().st_ino, f.stat().st_mtime_ns) for f in files] == before, "rewritten"
        runtime.remove(names)
        assert not any(f.exists() for f in files)
        assert not (disk.unit_dir / f"{names[0]}.d").exists()

    def test_drop_ins_are_readable_like_units_whatever_the_umask(
        self, real_harness: Harness
    ) -> None:
        runtime, disk = real_harness.runtime, real_harness.disk
        previous = os.umask(0o077)  # the agent's own unit sets UMask=0077
        try:
            [name] = runtime.install(REVISION_A, {"web.service": SLEEPER}, {})
        finally:
            os.umask(previous)
        drop_in = disk.unit_dir / f"{name}.d" / DROP_IN_NAME
        assert stat.S_IMODE(drop_in.stat().st_mode) == 0o644
        assert stat.S_IMODE(drop_in.parent.stat().st_mode) == 0o755
        assert stat.S_IMODE((disk.unit_dir / name).stat().st_mode) == 0o644


class TestProcesses:
    def test_each_unit_has_its_own_environment_file_and_sees_only_it(
        self, real_harness: Harness
    ) -> None:
        runtime, disk = real_harness.runtime, real_harness.disk
        out = {unit: real_harness.work / f"{unit}.json" for unit in ("web.service", "db.service")}
        environments = {
            "web.service": {"WEB_TOKEN": "w e b", "SHARED": "web's"},
            "db.service": {"DB_PASSWORD": 'p"a$s\\s', "SHARED": "db's"},
        }
        units = {unit: env_dumper(real_harness, path) for unit, path in out.items()}
        names = runtime.install(REVISION_A, units, environments)
        runtime.start(names)

        for unit, variables in environments.items():
            name = installed_name(unit, REVISION_A)
            env_file = disk.environment_dir / f"{name}.env"
            assert parse_environment_file(env_file.read_text()) == variables
            assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
            seen = seen_environment(out[unit])
            assert {key: seen.get(key) for key in variables} == variables
            others = {key for env in environments.values() for key in env} - set(variables)
            assert not others & set(seen), f"{unit} sees another unit's variables"
        assert stat.S_IMODE(disk.environment_dir.stat().st_mode) == 0o700
        assert sorted(os.listdir(disk.environment_dir)) == [f"{name}.env" for name in names]

    def test_environment_values_reach_the_process_exactly(self, real_harness: Harness) -> None:
        generator = random.Random(7)
        alphabet = " \t\n\r\"'\\$`%#;=~*?[]{}()<>|&!\x01\x1f\x7fé☃日\u2028"
        variables = dict(TRICKY_VALUES)
        for number in range(40):
            length = generator.randint(0, 24)
            variables[f"RANDOM_{number}"] = "".join(generator.choices(alphabet, k=length))
        out = real_harness.work / "env.json"
        names = real_harness.runtime.install(
            REVISION_A, {"web.service": env_dumper(real_harness, out)}, {"web.service": variables}
        )

        real_harness.runtime.start(names)

        seen = seen_environment(out)
        assert {key: seen.get(key) for key in variables} == variables


# What only one runtime does.


class TestSystemd:
    def test_a_timer_triggers_its_renamed_service(self, systemd_harness: Harness) -> None:
        marker = systemd_harness.work / "ticked"
        units = {
            "tick.timer": "[Timer]\nOnActiveSec=1ms\nAccuracySec=1ms\n",
            "tick.service": f"[Service]\nType=oneshot\nExecStart=/bin/touch {marker}\n",
        }
        names = systemd_harness.runtime.install(REVISION_A, units, {})

        systemd_harness.runtime.start([installed_name("tick.timer", REVISION_A)])

        wait_for(marker.exists)
        assert names == ["flotilla-tick-3f2a9c1b7d4e.service", "flotilla-tick-3f2a9c1b7d4e.timer"]

    def test_requires_pulls_in_the_sibling_of_the_same_revision(
        self, systemd_harness: Harness
    ) -> None:
        runtime = systemd_harness.runtime
        web = "[Unit]\nRequires=db.service\nAfter=db.service\n" + SLEEPER
        units = {"web.service": web, "db.service": SLEEPER}
        runtime.install(REVISION_A, units, {})
        runtime.install(REVISION_B, units, {})

        runtime.start([installed_name("web.service", REVISION_A)])

        db_a, db_b = (installed_name("db.service", r) for r in (REVISION_A, REVISION_B))
        assert states(systemd_harness, [db_a, db_b]) == [
            ("active", "running"),
            ("inactive", "dead"),
        ]

    def test_a_template_needs_an_instance(self, systemd_harness: Harness) -> None:
        runtime = systemd_harness.runtime
        names = runtime.install(REVISION_A, {"worker@.service": SLEEPER}, {})
        assert names == ["flotilla-worker-3f2a9c1b7d4e@.service"]

        with pytest.raises(ValidationError, match="without an instance"):
            runtime.start(names)
        instance = "flotilla-worker-3f2a9c1b7d4e@1.service"
        runtime.start([instance])
        assert runtime.owned_units() == [*names, instance]
        runtime.stop(names)  # a template stands for its instances
        assert states(systemd_harness, [instance]) == [("inactive", "dead")]

    def test_a_socket_with_an_environment_gets_the_file(self, systemd_harness: Harness) -> None:
        socket = "[Socket]\nListenStream=%t/flotilla-test.sock\n"
        units = {"web.socket": socket, "web.service": SLEEPER}
        names = systemd_harness.runtime.install(REVISION_A, units, {"web.socket": {"A": "1"}})

        text = (systemd_harness.disk.unit_dir / "flotilla-web-3f2a9c1b7d4e.socket").read_text()
        assert text.endswith(
            "EnvironmentFile=" + str(systemd_harness.disk.environment_dir) + "/"
            "flotilla-web-3f2a9c1b7d4e.socket.env\n"
        )
        systemd_harness.runtime.start([names[1]])
        assert states(systemd_harness, [names[1]]) == [("active", "listening")]


class TestPrivateManager:
    def test_two_managers_do_not_share_units(self) -> None:
        require_private_manager()
        with PrivateSystemdManager() as first, PrivateSystemdManager() as second:
            for manager in (first, second):
                (manager.unit_dir / "same.service").write_text(SLEEPER)
                for command in (["daemon-reload"], ["start", "same.service"]):
                    assert manager.systemctl(*command).returncode == 0

            assert first.systemctl("stop", "same.service").returncode == 0

            assert second.systemctl("is-active", "same.service").stdout.strip() == "active"

    def test_leftovers_of_a_killed_manager_are_swept(self) -> None:
        require_private_manager()
        manager = PrivateSystemdManager()
        with manager:
            (manager.unit_dir / "left.service").write_text(SLEEPER)
            for command in (["daemon-reload"], ["start", "left.service"]):
                assert manager.systemctl(*command).returncode == 0
            pid = int(manager.systemctl("show", "-P", "MainPID", "left.service").stdout)
            os.kill(manager.pid, signal.SIGKILL)
            wait_for(lambda: Path(f"/proc/{manager.pid}/stat").read_text().split()[2] == "Z")
            assert pid in manager.cgroup_pids()

        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
        assert manager.root is None, "its directory is removed"


class TestProcessRuntime:
    @pytest.mark.parametrize(
        "unit", ["web.socket", "tick.timer", "worker@.service"], ids=lambda u: u.split(".")[-1]
    )
    def test_activation_and_templates_are_refused(
        self, process_harness: Harness, unit: str
    ) -> None:
        units = {unit: "[Unit]\n", "web.service": SLEEPER}

        with pytest.raises(ConfigurationError, match="no socket or timer activation"):
            process_harness.runtime.install(REVISION_A, units, {})

        assert process_harness.runtime.owned_units() == []
        assert not process_harness.disk.unit_dir.exists() or not os.listdir(
            process_harness.disk.unit_dir
        )


class TestMemoryRuntime:
    def test_a_machine_whose_programs_exit_at_once_fails_their_units(self) -> None:
        machine = MemoryMachine(exits=memory_runtime.exits_at_once({"web.service"}))
        runtime = MemoryUnitRuntime(machine)
        names = runtime.install(REVISION_A, {"web.service": SLEEPER, "db.service": SLEEPER}, {})

        with pytest.raises(UnitFailedError) as failed:
            runtime.start(names)

        web = installed_name("web.service", REVISION_A)
        assert (failed.value.unit, failed.value.result, failed.value.exit_status) == (
            web,
            "exit-code",
            1,
        )
        assert runtime.active() == [installed_name("db.service", REVISION_A)]
