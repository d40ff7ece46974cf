"""`flotilla service delete` on a moto server, run as the console script: a service whose
instances run nothing goes at once; one whose instances run a revision is marked, shown as
being deleted (`service show|list`, `rollout status`), its instances are unassigned by real
scheduler passes and their (fake) agents' unassignment deploys, then the scheduler deletes
the record. `--wait` reports and fails cleanly while an unassignment failed or at --timeout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from flotilla.cli.service_deletion import delete_service
from flotilla.engine.clock import SystemClock
from tests.integration.cli_world import CliWorld, cli_world
from tests.integration.test_cli_commands import assert_refused
from tests.support.scheduler_world import FakeAgents, register


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliWorld]:
    with cli_world("del", tmp_path_factory.mktemp("revs")) as made:
        yield made


def running(world: CliWorld, service: str, count: int, agents: FakeAgents) -> None:
    """`service` with `count` instances that run v1."""
    world.cli.ok("service", "create", service, "--max-in-flight", "100%")
    world.add_revisions(service, "v1")
    world.cli.ok("weights", service, "v1=100")
    register(world.store, SystemClock(), service, count)
    for _ in range(2):
        world.scheduler_pass()
        agents.settle()
    world.scheduler_pass()
    assert all(i.current_revision for i in world.store.list_instances(service))


def test_a_service_whose_instances_run_nothing_is_deleted_at_once(world: CliWorld) -> None:
    world.cli.ok("service", "create", "idle")
    register(world.store, SystemClock(), "idle", 2)
    assert world.cli.ok("service", "delete", "idle").strip() == "deleted service idle"
    assert "does not exist" in world.cli.run("service", "show", "idle").stderr


def test_a_running_service_is_unassigned_then_deleted(world: CliWorld) -> None:
    agents = FakeAgents(world.store, SystemClock(), "busy")
    running(world, "busy", 2, agents)
    said = world.cli.ok("service", "delete", "busy")
    assert "busy is being deleted" in said
    assert "flotilla rollout status busy" in said

    shown = json.loads(world.cli.ok("service", "show", "busy", "-o", "json"))
    assert shown["deleting_since"] is not None
    assert "being deleted" in world.cli.ok("service", "show", "busy")
    (row,) = [line for line in world.cli.ok("service", "list").splitlines() if "busy" in line]
    assert row.rstrip().endswith("being deleted")

    world.scheduler_pass()
    status = world.status("busy")
    assert status["deleting_since"] == shown["deleting_since"]
    assert [i["phase"] for i in status["instances"]] == ["unassigning", "unassigning"]
    assert [w["kind"] for w in status["waiting_for"]] == ["deploys"]
    assert "being deleted" in world.cli.ok("rollout", "status", "busy")
    # Nothing may change it meanwhile; deleting it again says so.
    assert "is being deleted" in assert_refused(world.cli, "weights", "busy", "v1=0")
    assert "already being deleted" in world.cli.ok("service", "delete", "busy")
    # --wait while it still goes on: gives up at the timeout, the deletion goes on.
    gave_up = world.cli.run("service", "delete", "busy", "--wait", "--timeout", "0")
    assert gave_up.returncode == 1
    assert "still being deleted" in gave_up.stderr
    assert "2 instance(s) being unassigned, 0 failed" in gave_up.stdout

    agents.settle()  # the agents run their unassignments
    assert [i.current_revision for i in world.store.list_instances("busy")] == [None, None]
    assert world.scheduler_pass().deleted == ["busy"]
    assert "does not exist" in world.cli.run("service", "show", "busy").stderr
    assert "busy" not in world.cli.ok("service", "list")


def test_wait_fails_once_only_a_failed_unassignment_holds_the_deletion(world: CliWorld) -> None:
    agents = FakeAgents(
        world.store, SystemClock(), "stuck", fails=lambda deploy: deploy.to_revision is None
    )
    running(world, "stuck", 1, agents)
    world.cli.ok("service", "delete", "stuck")
    world.scheduler_pass()
    agents.settle()  # its unassignment fails: it runs v1 again
    world.scheduler_pass()
    failed = world.cli.run("service", "delete", "stuck", "--wait")
    assert failed.returncode == 1
    assert "unassignment of 1 instance(s) of stuck failed" in failed.stderr
    status = world.status("stuck")
    assert [i["phase"] for i in status["instances"]] == ["failed"]
    assert [w["kind"] for w in status["waiting_for"]] == ["failed_unassignments"]
    assert world.store.get_service("stuck").deleting


def test_wait_reports_each_change_and_returns_once_the_record_is_gone(
    world: CliWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    agents = FakeAgents(world.store, SystemClock(), "waited")
    running(world, "waited", 2, agents)

    def meanwhile(_seconds: float) -> None:
        """What happens between two polls: a scheduler pass, then one agent unassigns."""
        world.scheduler_pass()
        agents.start()
        agents.finish(limit=1)

    delete_service(
        world.wiring, "waited", expected_version=None, wait=True, interval=1, timeout=60,
        sleep=meanwhile,
    )  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        "2 instance(s) being unassigned, 0 failed",  # marked; not assigned none yet
        "1 instance(s) being unassigned, 0 failed",
        "0 instance(s) being unassigned, 0 failed",
        "deleted service waited",
    ]
    assert world.store.list_instances("waited")[0].current_revision is None
