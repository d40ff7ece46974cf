"""`flotilla rollout status|watch|pause|resume|revert` and `flotilla history`, on a moto server.

The world is built the way production builds it: the environment stack (tables and the
events queue) through CloudFormation, services and revisions through the CLI, instances
and deploys through the store (standing in for agents), assignments by real scheduler
passes. Bad input is checked with a scan of every table before and after.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flotilla.cli.follow import watch_rollout
from flotilla.cli.rollout_commands import set_paused
from flotilla.cli.wiring import Wiring
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome, Transition
from flotilla.engine.clock import FakeClock, SystemClock
from flotilla.engine.errors import FlotillaError, TransientError
from flotilla.engine.ports import Event, StateStore
from tests.integration.cli_world import CliWorld, cli_world
from tests.integration.test_cli_commands import assert_refused
from tests.support.scheduler_world import FakeAgents, register

SECRET = "s3cr3t-rollout-value"
ERROR = "web.service exited with status 1"


class World(CliWorld):
    def revisions(self, service: str) -> dict[str, str]:
        """Label -> id."""
        return {r.label: r.id for r in self.store.list_revisions(service)}

    def add_revisions(self, service: str, *labels: str) -> None:
        """As the shared world's, each with an environment holding a secret."""
        for label in labels:
            unit = f"[Service]\nExecStart=/usr/bin/web {label}\n"
            env = f"DB_PASSWORD={SECRET}\nLABEL={label}\n"
            self.add_revision(service, label, {"web.service": unit, "web.env": env})

    def events(self) -> list[Event]:
        """Every event on the queue now (acknowledged, so the next call sees only new ones)."""
        found: list[Event] = []
        while True:
            batch = self.wiring.events.receive(wait=timedelta(seconds=1))
            if not batch:
                return found
            for event in batch:
                self.wiring.events.ack(event)
            found += batch


@contextmanager
def rollout_world(prefix: str, tmp: Path) -> Iterator[World]:
    with cli_world(prefix, tmp) as shared:
        yield World(shared.cli, shared.wiring, shared.tmp)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with rollout_world("ro", tmp_path_factory.mktemp("revs")) as made:
        yield made


def woken_by(world: World, service: str) -> list[str]:
    """The kinds of the wake-ups sent about `service` since the last look."""
    return [e.kind for e in world.events() if e.service == service]


def finish(store: StateStore, deploy: DeployCheckpoint, *, fail: bool = False) -> None:
    """What an agent does at the end of a deploy (a failed one runs its old revision again)."""
    if not fail:
        store.set_current_revision(deploy.service, deploy.instance_id, deploy.to_revision)
    now = SystemClock().now()
    history = (
        (Transition("starting", now, now, error=ERROR), Transition("failed", now, now))
        if fail
        else ()
    )
    store.update_deploy(
        dataclasses.replace(
            deploy,
            state="done",
            updated_at=now,
            outcome=Outcome.ROLLED_BACK if fail else Outcome.SUCCEEDED,
            error=ERROR if fail else None,
            failed_in="starting" if fail else None,  # noted by the machine, stored with it
            history=history,
        )
    )


def settle(world: World, service: str) -> None:
    """Passes and agents until the rollout completes."""
    agents = FakeAgents(world.store, SystemClock(), service)
    for _ in range(10):
        world.scheduler_pass()
        agents.settle()
        if world.store.get_service(service).rollout_state.status.value == "complete":
            world.scheduler_pass()
            return
    raise AssertionError(f"{service} did not settle")


@pytest.fixture(scope="module")
def web(world: World) -> str:
    """`web`: 4 instances, last good weights v1=100, then a rollout to v1=25 v2=75 under way:
    one instance settled on v1, one settled on v2, one failed, one deploying (`starting`)."""
    cli = world.cli
    cli.ok("service", "create", "web", "--max-in-flight", "3", "--max-failures", "2")
    world.add_revisions("web", "v1", "v2", "v3")
    register(world.store, SystemClock(), "web", 4)
    cli.ok("weights", "web", "v1=100")
    settle(world, "web")
    assert world.store.get_service("web").rollout_state.previous_weights is not None
    cli.ok("weights", "web", "v1=25", "v2=75")
    report = world.scheduler_pass()
    assert report.assignments_written == 3
    started = FakeAgents(world.store, SystemClock(), "web").start()
    assert len(started) == 3
    first, second, third = sorted(started, key=lambda d: d.instance_id)
    finish(world.store, first)
    finish(world.store, second, fail=True)
    world.store.update_deploy(dataclasses.replace(third, state="starting"))
    world.scheduler_pass()  # counts the failure: 1 of 2 allowed, the rollout goes on
    return "web"


def test_status_shows_every_phase(world: World, web: str) -> None:
    status = json.loads(world.cli.ok("rollout", "status", web, "-o", "json"))
    assert status["service"] == web
    assert status["paused"] is False
    rollout = status["rollout"]
    assert rollout["status"] == "rolling"
    assert rollout["in_sync"] is True
    assert {w["label"]: w["weight"] for w in rollout["weights"]} == {"v1": 25, "v2": 75}
    assert rollout["failures"] == [{"id": world.revisions(web)["v2"], "label": "v2", "count": 1}]
    assert {w["label"] for w in rollout["previous_weights"]} == {"v1"}
    assert rollout["started_at"] is not None
    revisions = {r["label"]: r for r in status["revisions"]}
    assert (revisions["v2"]["target"], revisions["v2"]["running"]) == (3, 1)
    assert (revisions["v1"]["target"], revisions["v1"]["running"]) == (1, 3)
    by_phase: dict[str, list[dict[str, Any]]] = {}
    for instance in status["instances"]:
        by_phase.setdefault(instance["phase"], []).append(instance)
    assert sorted(by_phase) == ["deploying", "failed", "settled"]
    (deploying,) = by_phase["deploying"]
    assert deploying["deploy_state"] == "starting"
    assert deploying["progress"] == {"step": 6, "steps": 10}
    assert deploying["assigned_revision"]["label"] == "v2"
    assert deploying["current_revision"]["label"] == "v1"
    (failed,) = by_phase["failed"]
    assert failed["error"] == ERROR
    assert failed["current_revision"]["label"] == "v1"
    assert {i["current_revision"]["label"] for i in by_phase["settled"]} == {"v1", "v2"}

    text = world.cli.ok("rollout", "status", web)
    assert "rolling" in text
    assert "v1=25, v2=75" in text
    assert "starting (6/10)" in text
    assert f"failed in starting: {ERROR}" in text
    assert "[##########--------------------]  1/3 running (weight 75)" in text
    for output in (text, json.dumps(status)):
        assert SECRET not in output


def test_pause_stops_the_scheduler_and_wakes_it(world: World, web: str) -> None:
    world.events()  # drop earlier wake-ups
    assert "the scheduler moves nothing" in world.cli.ok("rollout", "pause", web)
    service = world.store.get_service(web)
    assert service.paused is True
    assert service.history[-1].kind == "paused"
    assert service.history[-1].reason.startswith("paused by ")
    assert woken_by(world, web) == ["service_changed"]
    assert "already" in world.cli.ok("rollout", "pause", web)
    assert woken_by(world, web) == []  # nothing changed, nobody woken

    # A weight change that would move instances: a paused service moves none.
    world.cli.ok("weights", web, "v1=0", "v2=100")
    before = world.cli.snapshot()
    report = world.scheduler_pass()
    assert (report.assignments_written, report.service_writes) == (0, 0)
    assert world.cli.snapshot() == before
    status = json.loads(world.cli.ok("rollout", "status", web, "-o", "json"))
    assert status["paused"] is True
    assert status["rollout"]["in_sync"] is False
    assert "rollout resume" in world.cli.ok("rollout", "status", web)

    world.events()  # drop the wake-up of the weight change
    resumed = json.loads(world.cli.ok("rollout", "resume", web, "--reason", "fixed", "-o", "json"))
    assert resumed["paused"] is False
    assert resumed["scheduler_woken"] is True
    entry = world.store.get_service(web).history[-1]
    assert (entry.kind, entry.reason.endswith(": fixed")) == ("resumed", True)
    assert woken_by(world, web) == ["service_changed"]
    assert world.scheduler_pass().assignments_written > 0


class UnreachableQueue:
    def send(self, event: Event) -> None:
        raise TransientError("sending an event: cannot reach SQS; will retry")


def test_a_change_stands_when_the_scheduler_cannot_be_woken(
    world: World, web: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wiring = Wiring(world.wiring.settings)
    wiring.__dict__["events"] = UnreachableQueue()  # in place of the cached SQS queue
    set_paused(wiring, web, True, "queue test", "text")
    captured = capsys.readouterr()
    assert "warning: the change is stored, but the scheduler was not woken" in captured.err
    assert "cannot reach SQS" in captured.err
    assert "paused by" in captured.out
    assert world.store.get_service(web).paused is True
    world.cli.ok("rollout", "resume", web)
    assert world.store.get_service(web).paused is False


def test_revert_restores_the_last_good_weights(world: World, web: str) -> None:
    ids = world.revisions(web)
    assert world.store.get_service(web).weights != {ids["v1"]: 100}
    world.events()  # drop earlier wake-ups
    out = world.cli.ok("rollout", "revert", web, "--reason", "v2 is slow")
    assert "last good weights v1=100" in out
    service = world.store.get_service(web)
    assert service.weights == {ids["v1"]: 100}
    entry = service.history[-1]
    assert entry.kind == "reverted"
    assert entry.reason.startswith("reverted by ")
    assert entry.reason.endswith(": v2 is slow")
    assert woken_by(world, web) == ["service_changed"]
    history = json.loads(world.cli.ok("history", web, "-o", "json", "--limit", "1"))
    assert [(h["kind"], h["reason"]) for h in history] == [("reverted", entry.reason)]
    assert "nothing to revert" in assert_refused(world.cli, "rollout", "revert", web, code=1)


def test_history_merges_deploys_and_entries_without_secrets(world: World, web: str) -> None:
    history = json.loads(world.cli.ok("history", web, "-o", "json"))
    times = [h["at"] for h in history]
    assert times == sorted(times, reverse=True)
    deploys = [h for h in history if h["type"] == "deploy"]
    failed = [d for d in deploys if d["outcome"] == "rolled_back"]
    assert len(failed) == 1
    assert failed[0]["error"] == ERROR
    assert failed[0]["failed_in"] == "starting"
    assert (failed[0]["from_revision"]["label"], failed[0]["to_revision"]["label"]) == ("v1", "v2")
    assert any(d["outcome"] == "succeeded" and d["duration_seconds"] >= 0 for d in deploys)
    assert any(d["outcome"] is None for d in deploys)  # the one still `starting`
    kinds = {h["kind"] for h in history if h["type"] == "service"}
    assert {"rollout_started", "rollout_complete"} <= kinds  # (pauses and reverts: see above)

    text = world.cli.ok("history", web)
    assert "v1→v2" in text
    # The scheduler writes ids into its reasons; people read labels there too.
    assert "weights changed from" in text
    assert all(rev[:12] not in text for rev in world.revisions(web).values())
    assert "v1=25" in text
    assert f"failed in starting: {ERROR}" in text
    assert "running (starting)" in text
    assert len(world.cli.ok("history", web, "--limit", "2").strip().splitlines()) == 3
    for output in (text, json.dumps(history)):
        assert SECRET not in output
        assert "DB_PASSWORD" not in output


def test_watch_exits_0_on_a_completed_rollout(world: World) -> None:
    world.cli.ok("service", "create", "calm", "--max-in-flight", "1")
    world.add_revisions("calm", "v1")
    register(world.store, SystemClock(), "calm", 3, prefix="calm")
    world.cli.ok("weights", "calm", "v1=100")
    agents = FakeAgents(world.store, SystemClock(), "calm")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # one step of the world per poll, no real waiting
        sleeps.append(seconds)
        world.scheduler_pass()
        agents.settle()

    watch_rollout(world.wiring, "calm", interval=2, timeout=600, output="json", sleep=sleep)
    assert len(sleeps) >= 3  # one instance at a time
    assert set(sleeps) == {2}
    # Once complete, the command itself says so at the first poll.
    result = world.cli.run("rollout", "watch", "calm", "--interval", "0.1")
    assert result.returncode == 0, result.stderr
    assert "rollout of calm complete" in result.stdout
    lines = world.cli.ok("rollout", "watch", "calm", "-o", "json").strip().splitlines()
    assert [json.loads(line)["rollout"]["status"] for line in lines] == ["complete"]


def test_watch_exits_1_on_a_stopped_rollout(world: World) -> None:
    world.cli.ok("service", "create", "sad")
    world.add_revisions("sad", "v1")
    register(world.store, SystemClock(), "sad", 2, prefix="sad")
    world.cli.ok("weights", "sad", "v1=100")
    agents = FakeAgents(world.store, SystemClock(), "sad", fails=lambda _d: True)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        world.scheduler_pass()
        agents.settle()

    with pytest.raises(FlotillaError, match="stopped") as stopped:
        watch_rollout(world.wiring, "sad", interval=1, timeout=600, output="text", sleep=sleep)
    assert ERROR in stopped.value.message
    assert sleeps
    result = world.cli.run("rollout", "watch", "sad")
    assert result.returncode == 1
    assert result.stderr.startswith("error: the rollout of sad stopped")
    assert "Traceback" not in result.stderr


def test_watch_gives_up_at_its_timeout(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.cli.ok("service", "create", "slow")
    world.add_revisions("slow", "v1")
    world.cli.ok("weights", "slow", "v1=100")  # no scheduler runs: it never starts
    start = SystemClock().now()
    clock = FakeClock(start)
    wiring = Wiring(world.wiring.settings, clock=clock)
    with pytest.raises(FlotillaError, match="gave up watching slow after 12 s"):
        watch_rollout(wiring, "slow", interval=5, timeout=12, output="json")
    polls = capsys.readouterr().out.strip().splitlines()
    assert len(polls) == 4  # at 0, 5, 10 and 12 s
    assert all(json.loads(line)["rollout"]["in_sync"] is False for line in polls)
    assert clock.now() - start == timedelta(seconds=12)


def test_mistakes_change_nothing(world: World, web: str) -> None:
    cli = world.cli
    for command in (["rollout", "status"], ["rollout", "pause"], ["rollout", "resume"],
                    ["rollout", "revert"], ["rollout", "watch"], ["history"]):  # fmt: skip
        assert "does not exist" in assert_refused(cli, *command, "nosuch", code=1)
        assert "invalid service name" in assert_refused(cli, *command, "Bad_Name")
    cli.ok("service", "create", "fresh")
    world.events()  # drop earlier wake-ups
    assert "no rollout of fresh has completed" in assert_refused(
        cli, "rollout", "revert", "fresh", code=1
    )
    for limit in ("0", "-1", "abc", "10001", ""):
        assert "invalid --limit" in assert_refused(cli, "history", web, "--limit", limit)
    for option, value in (("--interval", "0"), ("--interval", "x"), ("--timeout", "-1"),
                          ("--timeout", "nan"), ("--interval", "inf")):  # fmt: skip
        assert f"invalid {option}" in assert_refused(cli, "rollout", "watch", web, option, value)
    for reason in ("", "   ", "two\nlines", "x" * 201):
        assert "invalid --reason" in assert_refused(
            cli, "rollout", "pause", web, "--reason", reason
        )
    assert woken_by(world, web) == []
    assert woken_by(world, "fresh") == []


def test_every_command_has_help(world: World) -> None:
    for command in (["rollout", "status"], ["rollout", "watch"], ["rollout", "pause"],
                    ["rollout", "resume"], ["rollout", "revert"], ["rollout", "undo"],
                    ["history"]):  # fmt: skip
        assert "Usage:" in world.cli.ok(*command, "--help")


def test_trace_speaks_labels_and_shows_the_scheduler(world: World, web: str) -> None:
    text = world.cli.ok("trace", "rollout", web, "--width", "80", "--color", "never")
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "rollout of web to v2 (" in text
    scheduler = next(line for line in text.splitlines() if line.startswith("SCHEDULER"))
    assert "S" in scheduler.split("|")[1]  # the rollout to v1=25, v2=75 began
    assert "weights changed" in text
    assert "v1 (" in text  # deploys moved from v1 to v2, by label beside the id
    assert "→ v2 (" in text
    page = world.tmp / "web.html"
    world.cli.ok("trace", "rollout", web, "--html", str(page))
    html = page.read_text()
    assert '<section id="failures">' in html  # the failed deploy, and why, at the top
    assert ERROR in html
    assert SECRET not in html
