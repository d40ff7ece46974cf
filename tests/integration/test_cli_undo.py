"""`flotilla rollout undo` and `weights --wait`/`--stop-all` on a moto server, in a world
built as `test_cli_rollout` builds its own (the environment stack through CloudFormation,
services and revisions through the CLI, fake agents, real scheduler passes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from flotilla.cli.wiring import Wiring
from flotilla.engine.clock import SystemClock
from tests.integration.test_cli_commands import assert_refused
from tests.integration.test_cli_rollout import World, rollout_world, settle
from tests.support.aws import REGION
from tests.support.scheduler_world import FakeAgents, register


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with rollout_world("undo", tmp_path_factory.mktemp("revs")) as made:
        yield made


def stepping_wiring(world: World, service: str, **agents: Any) -> Wiring:
    """The real composition root whose clock moves the world one step per wait: a
    scheduler pass and the fake agents, so `--wait` can be followed without real time."""
    fake = FakeAgents(world.store, SystemClock(), service, **agents)

    class Stepping(SystemClock):
        def sleep(self, seconds: float) -> None:
            world.scheduler_pass()
            fake.settle()

    return Wiring(world.wiring.settings, Stepping(), interactive=True)


@dataclass
class Invoked:
    exit_code: int
    output: str  # standard output and standard error


def invoke(world: World, wiring: Wiring, *args: str) -> Invoked:
    """`flotilla ARGS` in-process through the console script's main() (its one-line errors
    and exit codes), on `wiring` (so its waits step the world)."""
    import sys

    from click.testing import CliRunner

    from flotilla.cli import rollout_commands, weights_command
    from flotilla.cli.main import main

    patch = pytest.MonkeyPatch()
    for module in (rollout_commands, weights_command):
        patch.setattr(module, "wiring_from", lambda _options: wiring)
    aws = ["--env", world.cli.environment, "--region", REGION]
    patch.setattr(sys, "argv", ["flotilla", *args, *aws])
    code = 0
    with CliRunner().isolation() as (out, err, _):
        try:
            main()
        except SystemExit as exited:
            code = exited.code if isinstance(exited.code, int) else 1
        finally:
            patch.undo()
            sys.stdout.flush()
            sys.stderr.flush()
        return Invoked(code, out.getvalue().decode() + err.getvalue().decode())


def test_undo_goes_back_after_a_rollout_that_succeeded(world: World) -> None:
    cli = world.cli
    cli.ok("service", "create", "undone", "--max-in-flight", "2")
    world.add_revisions("undone", "v1", "v2")
    register(world.store, SystemClock(), "undone", 2, prefix="undone")
    cli.ok("weights", "undone", "v1=100")
    settle(world, "undone")
    cli.ok("weights", "undone", "v1=0", "v2=100")
    settle(world, "undone")  # a rollout that succeeded: revert has nothing to go back to
    refused = assert_refused(cli, "rollout", "revert", "undone", code=1)
    assert "flotilla rollout undo undone" in refused
    out = cli.ok("rollout", "undo", "undone", "--reason", "v2 is slow")
    assert "undone's weights are back to v1=100, v2=0 (were v1=0, v2=100)" in out
    ids = world.revisions("undone")
    service = world.store.get_service("undone")
    assert service.weights == {ids["v1"]: 100, ids["v2"]: 0}
    assert service.history[-1].kind == "undone"
    history = cli.ok("history", "undone", "--limit", "1")
    assert "undone by " in history
    assert ": v2 is slow" in history
    # --to a revision, and the mistakes: one line, exit 2, nothing stored
    assert "back to v1=0, v2=100" in cli.ok("rollout", "undo", "undone", "--to", "v2")
    for mistake in (["--steps", "0"], ["--steps", "x"], ["--to", "nosuch"],
                    ["--to", "v1", "--steps", "2"]):  # fmt: skip
        assert_refused(cli, "rollout", "undo", "undone", *mistake)
    assert (
        "undone's weights 9 steps back: its history holds 3 earlier setting(s)"
        in assert_refused(cli, "rollout", "undo", "undone", "--steps", "9", code=1)
    )


def test_weights_that_run_nothing_need_stop_all(world: World) -> None:
    cli = world.cli
    cli.ok("service", "create", "stopper")
    world.add_revisions("stopper", "v1")
    cli.ok("weights", "stopper", "v1=100")
    refused = assert_refused(cli, "weights", "stopper", "v1=0")
    assert "every revision of stopper would have weight 0" in refused
    assert "--stop-all" in refused
    assert "--stop-all is for weights that are all 0" in assert_refused(
        cli, "weights", "stopper", "v1=50", "--stop-all"
    )
    cli.ok("weights", "stopper", "v1=0", "--stop-all")
    assert world.store.get_service("stopper").weights == {world.revisions("stopper")["v1"]: 0}


def test_weights_wait_follows_the_rollout_and_exits_with_its_outcome(world: World) -> None:
    cli = world.cli
    cli.ok("service", "create", "waited", "--max-in-flight", "1")
    world.add_revisions("waited", "v1", "v2")
    register(world.store, SystemClock(), "waited", 3, prefix="waited")
    wiring = stepping_wiring(world, "waited")
    done = invoke(world, wiring, "weights", "waited", "v1=100", "--wait", "--interval", "1",
                  "-o", "json")  # fmt: skip
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in done.output.strip().splitlines()]
    assert lines[0]["weights"][0]["label"] == "v1"  # what was stored, on one line
    assert len(lines) > 3  # then a line per poll, one instance at a time
    assert lines[-1]["rollout"]["status"] == "complete"
    assert {i["current_revision"]["label"] for i in lines[-1]["instances"]} == {"v1"}
    # A rollout that fails and is reverted: exit 1, with the reason.
    failing = stepping_wiring(world, "waited", fails=lambda d: True)
    done = invoke(world, failing, "weights", "waited", "v2=100", "v1=0", "--wait",
                  "--interval", "1")  # fmt: skip
    assert done.exit_code == 1
    assert "error: the rollout of waited was stopped and reverted" in done.output
    # undo --wait goes the same way
    done = invoke(world, stepping_wiring(world, "waited"), "rollout", "undo", "waited",
                  "--wait", "--interval", "1")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "rollout of waited complete" in done.output
