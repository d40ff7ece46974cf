"""Rollouts in waves across three regions (issue 18), on one moto server.

moto keeps its regions apart on one server; each region's endpoint, as the CLI sees it,
is a proxy of its own (`FLOTILLA_ENDPOINT_URLS`), so one region can go dark while the
others answer. Each region has its own environment stack, scheduler passes and fake
agents (`Fleet`, a thread), reached directly rather than through the proxies: a region
the operator cannot reach goes on with its own rollout, as a real one does. The CLI runs
as an operator runs it, in a process of its own that a test may kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from flotilla.cli.wiring import AwsSettings, Wiring
from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.clock import SystemClock
from flotilla.engine.records import FailureAction, RolloutStatus, WavePlan, WaveStatus
from flotilla.engine.revisions import build_revision
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from tests.support.agents import FLOTILLA
from tests.support.aws import create_environment_stack, moto_server
from tests.support.cli import Cli
from tests.support.faults import EndpointProxy
from tests.support.scheduler_world import FakeAgents, register

A, B, C = "eu-west-1", "us-east-1", "ap-southeast-2"
REGIONS = (A, B, C)
WAVES = ",".join(REGIONS)
# Minutes, never reached: a test that hangs fails with the command's output instead.
PATIENCE = 180.0


@dataclass
class Fleet:
    """Each region's scheduler and agents, stepping every 0.2 s in a thread. `failing`
    names (region, service, label) whose deploys fail; `held` regions make no progress."""

    wirings: dict[str, Wiring]
    failing: set[tuple[str, str, str]] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _fails(self, region: str) -> Callable[[DeployCheckpoint], bool]:
        store = self.wirings[region].store

        def fails(deploy: DeployCheckpoint) -> bool:
            if deploy.to_revision is None:
                return False
            label = store.get_revision(deploy.service, deploy.to_revision).label
            return (region, deploy.service, label) in self.failing

        return fails

    def _run(self) -> None:
        clock = SystemClock()
        while not self._stop.wait(0.2):
            for region, wiring in self.wirings.items():
                if region in self.held:
                    continue
                try:
                    SchedulerPass(wiring.store, clock, PassSettings(), lambda: 1).run()
                    for service in sorted(self.services):
                        FakeAgents(wiring.store, clock, service, fails=self._fails(region)).settle()
                except Exception as exc:  # surfaced by the tests, not swallowed
                    self.errors.append(exc)


@dataclass
class World:
    cli: Cli
    endpoints: dict[str, str]  # region -> the CLI's endpoint (its proxy)
    proxies: dict[str, EndpointProxy]
    wirings: dict[str, Wiring]  # direct, as each region's own scheduler reaches it
    fleet: Fleet
    tmp: Path

    @property
    def variables(self) -> dict[str, str]:
        pairs = ",".join(f"{region}={url}" for region, url in self.endpoints.items())
        return {"FLOTILLA_ENDPOINT_URLS": pairs}

    def run(self, *args: str, timeout: float = PATIENCE) -> subprocess.CompletedProcess[str]:
        return self.cli.run(*args, env=self.variables, timeout=timeout)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """`flotilla ARGS` in the background, with the home region as the entry."""
        variables = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FLOTILLA_") and k not in ("AWS_REGION", "AWS_DEFAULT_REGION")
        }
        aws = ["--endpoint-url", self.cli.endpoint, "--env", self.cli.environment, "--region", A]
        return subprocess.Popen(
            [FLOTILLA, *args, *aws],
            env={**variables, **self.variables},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def service(self, name: str, *labels: str, instances: int = 2) -> None:
        """`name` in the three regions, home A, with a revision per label and instances."""
        regions = [arg for region in REGIONS for arg in ("--region", region)]
        self.cli.ok("service", "create", name, *regions, env=self.variables, with_region=False)
        for label in labels:
            directory = self.tmp / f"{name}-{label}"
            directory.mkdir()
            (directory / "web.service").write_text(f"[Service]\nExecStart=/usr/bin/web {label}\n")
            (directory / "web.env").write_text(f"LABEL={label}\n")
            self.ok("revision", "add", name, str(directory), "--label", label, "--region", A)
        clock = SystemClock()
        for wiring in self.wirings.values():
            register(wiring.store, clock, name, instances, prefix=f"{name}-i")
        self.fleet.services.add(name)

    def plan(self, name: str) -> WavePlan:
        plan = self.wirings[A].store.get_service(name).waves
        assert plan is not None
        return plan

    def weights(self, region: str, name: str) -> dict[str, int]:
        """Label -> weight in `region`."""
        store = self.wirings[region].store
        labels = {r.id: r.label for r in store.list_revisions(name)}
        return {labels[r]: w for r, w in store.get_service(name).weights.items()}

    def running(self, region: str, name: str) -> set[str | None]:
        """The labels the instances of `name` in `region` run."""
        store = self.wirings[region].store
        labels = {r.id: r.label for r in store.list_revisions(name)}
        return {labels.get(i.current_revision or "") for i in store.list_instances(name)}

    def snapshot(self) -> dict[str, Any]:
        scans: dict[str, Any] = {}
        for region in REGIONS:
            client = boto3.client("dynamodb", region_name=region, endpoint_url=self.cli.endpoint)
            prefix = f"flotilla-{self.cli.environment}-"
            for table in client.list_tables()["TableNames"]:
                if table.startswith(prefix):
                    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
                    scans[f"{region}/{table}"] = sorted(
                        json.dumps(i, sort_keys=True, default=repr) for i in items
                    )
        return scans


def wait_for(what: str, check: Callable[[], bool], timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    environment = f"waves{os.getpid()}"
    with moto_server() as endpoint:
        port = urllib.parse.urlsplit(endpoint).port
        assert port is not None
        for region in REGIONS:
            create_environment_stack(environment, endpoint, region=region)
        proxies = {region: EndpointProxy(port) for region in REGIONS}
        wirings = {
            region: Wiring(
                AwsSettings(environment=environment, region=region, endpoint_url=endpoint)
            )
            for region in REGIONS
        }
        fleet = Fleet(wirings)
        fleet.start()
        try:
            yield World(
                Cli(endpoint, environment),
                {region: proxy.endpoint for region, proxy in proxies.items()},
                proxies,
                wirings,
                fleet,
                tmp_path_factory.mktemp("waves"),
            )
        finally:
            fleet.stop()
            for proxy in proxies.values():
                proxy.down()
        assert not fleet.errors, fleet.errors


def test_three_regions_roll_out_one_after_another(world: World) -> None:
    world.service("web", "v1")
    result = world.run("weights", "web", "v1=100", "--waves", WAVES, "--interval", "0.3")
    assert result.returncode == 0, result.stderr
    assert "waves of web complete" in result.stdout
    plan = world.plan("web")
    assert plan.status is WaveStatus.COMPLETE
    assert [wave.region for wave in plan.waves] == list(REGIONS)
    for earlier, later in zip(plan.waves, plan.waves[1:], strict=False):
        assert earlier.completed_at is not None
        assert later.applied_at is not None
        assert earlier.completed_at <= later.applied_at  # the next waited for the one before
    for region in REGIONS:
        assert world.weights(region, "web") == {"v1": 100}
        assert world.running(region, "web") == {"v1"}
    # Each region's line says when it was set and when it completed, in order.
    said = [line.split(":")[0] for line in result.stdout.splitlines() if "weights set" in line]
    assert said == list(REGIONS)


def test_a_revision_failing_in_the_first_region_never_reaches_the_second(world: World) -> None:
    world.service("sad", "v1", "v2")
    world.ok("weights", "sad", "v1=100", "--waves", WAVES, "--interval", "0.3")
    world.fleet.failing.add((A, "sad", "v2"))
    result = world.run("weights", "sad", "v2=100", "v1=0", "--waves", WAVES, "--interval", "0.3")
    assert result.returncode == 1, result.stderr
    assert "the waves of sad stopped: eu-west-1:" in result.stderr
    plan = world.plan("sad")
    assert plan.status is WaveStatus.STOPPED
    assert plan.reason is not None
    assert plan.reason.startswith(f"{A}: ")
    assert [wave.applied for wave in plan.waves] == [True, False, False]
    for region in (B, C):
        assert world.weights(region, "sad") == {"v1": 100}
        assert world.running(region, "sad") == {"v1"}
        history = world.wirings[region].store.get_service("sad").history
        assert all("v2" not in str(entry) for entry in history)
    # The first region's own scheduler reverted its rollout (its failure action).
    wait_for("the first region back on v1", lambda: world.running(A, "sad") == {"v1"})


def test_a_failure_in_a_later_region_sets_the_regions_done_back(world: World) -> None:
    world.service("later", "v1", "v2")
    world.ok("weights", "later", "v1=100", "--waves", WAVES, "--interval", "0.3")
    world.fleet.failing.add((B, "later", "v2"))
    result = world.run("weights", "later", "v2=100", "v1=0", "--waves", WAVES, "--interval", "0.3")
    assert result.returncode == 1, result.stderr
    plan = world.plan("later")
    assert plan.failure_action is FailureAction.REVERT
    assert plan.reason is not None
    assert plan.reason.startswith(f"{B}: ")
    assert [(w.applied, w.undone) for w in plan.waves] == [
        (True, True),
        (True, False),
        (False, False),
    ]
    assert world.weights(A, "later") == {"v1": 100, "v2": 0}
    wait_for("the first region back on v1", lambda: world.running(A, "later") == {"v1"})
    assert world.weights(C, "later") == {"v1": 100}
    assert "eu-west-1: set back to its weights from before the waves" in result.stdout


def test_a_region_going_dark_mid_wave_holds_the_waves_with_the_reason(world: World) -> None:
    world.service("dark", "v1")
    world.fleet.held.add(A)  # A's rollout waits until B has gone dark
    command = world.popen("weights", "dark", "v1=100", "--waves", WAVES, "--interval", "0.3")
    dark = False
    try:
        wait_for("the first wave applied", lambda: _applied(world, "dark", 0))
        world.proxies[B].down()
        dark = True
        world.fleet.held.discard(A)
        wait_for("the waves held", lambda: world.plan("dark").status is WaveStatus.HELD)
        plan = world.plan("dark")
        assert plan.reason is not None
        assert plan.reason.startswith(f"region {B} is unreachable")
        assert plan.waves[0].completed_at is not None
        assert not plan.waves[1].applied
        assert world.weights(B, "dark") == {}  # nothing reached the dark region
        assert command.poll() is None  # still waiting for it
        world.proxies[B].up()
        dark = False
        stdout, stderr = command.communicate(timeout=PATIENCE)
    finally:
        if command.poll() is None:
            command.kill()
        if dark:
            world.proxies[B].up()
    assert command.returncode == 0, stderr
    assert f"the waves are held: region {B} is unreachable" in stdout
    assert world.plan("dark").status is WaveStatus.COMPLETE
    for region in REGIONS:
        assert world.running(region, "dark") == {"v1"}


def test_a_command_killed_mid_wave_is_resumed_from_the_stored_progress(world: World) -> None:
    world.service("killed", "v1")
    world.fleet.held.add(B)  # the second wave cannot complete while the command is killed
    command = world.popen("weights", "killed", "v1=100", "--waves", WAVES, "--interval", "0.3")
    try:
        wait_for("the second wave applied", lambda: _applied(world, "killed", 1))
    finally:
        command.send_signal(signal.SIGKILL)
        command.communicate(timeout=30)
    before = world.plan("killed")
    assert before.status is WaveStatus.ROLLING
    assert before.current == 1
    a_version = world.wirings[A].store.get_service("killed").version
    world.fleet.held.discard(B)
    result = world.run("rollout", "waves", "killed", "--interval", "0.3", "--region", A)
    assert result.returncode == 0, result.stderr
    after = world.plan("killed")
    assert after.status is WaveStatus.COMPLETE
    assert after.number == before.number
    assert after.waves[0] == before.waves[0]  # the first wave was not done again
    assert after.waves[1].applied_at == before.waves[1].applied_at
    assert world.wirings[A].store.get_service("killed").weights == before.waves[0].weights
    assert world.wirings[A].store.get_service("killed").version >= a_version
    for region in REGIONS:
        assert world.running(region, "killed") == {"v1"}


def test_an_unreachable_region_refuses_the_waves_and_changes_nothing(world: World) -> None:
    world.service("staged", "v1")
    world.proxies[C].down()
    try:
        before = world.snapshot()
        result = world.run("weights", "staged", "v1=100", "--waves", WAVES, "--interval", "0.3")
        after = world.snapshot()
    finally:
        world.proxies[C].up()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: region {C} is unreachable"), result.stderr
    assert "Traceback" not in result.stderr
    assert after == before


@pytest.mark.parametrize(
    ("waves", "message"),
    [
        (f"{A},{B}", "must name each region of bad once"),
        (f"{A},{B},{C},{A}", "more than once"),
        (A, "two regions or more"),
        (f"{A},{B},us-west-9", "must name each region of bad once"),
        (f"{A},{B},not a region", "invalid AWS region"),
    ],
)
def test_bad_waves_are_refused_in_one_line_and_change_nothing(
    world: World, waves: str, message: str
) -> None:
    if "bad" not in world.fleet.services:
        world.service("bad", "v1")
    before = world.snapshot()
    result = world.run("weights", "bad", "v1=100", "--waves", waves)
    assert world.snapshot() == before
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_a_label_missing_in_one_region_is_refused_before_any_region_changes(world: World) -> None:
    world.service("partial", "v1")
    directory = world.tmp / "partial-only-a"
    directory.mkdir()
    (directory / "web.service").write_text("[Service]\nExecStart=/usr/bin/web only-a\n")
    a_only = world.wirings[A]  # the revision goes to A alone, as if added there alone
    unit = {"web.service": (directory / "web.service").read_text()}
    a_only.store.put_revision(
        build_revision("partial", "only-a", unit, {}, a_only.secret_box(), a_only.clock.now())
    )
    before = world.snapshot()
    result = world.run("weights", "partial", "only-a=100", "--waves", WAVES)
    assert world.snapshot() == before
    assert result.returncode != 0
    assert f"error: {B}: " in result.stderr
    assert "only-a" in result.stderr


def _applied(world: World, name: str, index: int) -> bool:
    try:
        return world.plan(name).waves[index].applied
    except AssertionError:
        return False


def test_weights_without_waves_are_set_in_every_region_at_once(world: World) -> None:
    world.service("every", "v1", "v2")
    result = world.run("weights", "every", "v1=100")
    assert result.returncode == 0, result.stderr
    for region in REGIONS:
        assert f"{region}: weights v1=100" in result.stdout
        assert world.weights(region, "every") == {"v1": 100}
    for region in REGIONS:  # the fleet writes nothing more once every rollout completed
        wait_for(f"{region} complete", lambda region=region: _complete(world, region, "every"))
    world.proxies[C].down()  # not the entry region (us-east-1): that one answers
    try:
        before = world.snapshot()
        refused = world.run("weights", "every", "v2=100", "v1=0")
        assert world.snapshot() == before  # not even the regions that answered changed
    finally:
        world.proxies[C].up()
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: region {C} is unreachable")


def test_an_operator_stops_waves_under_way_and_every_region_keeps_what_it_runs(
    world: World,
) -> None:
    world.service("halt", "v1")
    world.fleet.held.add(A)  # the first wave cannot complete
    command = world.popen("weights", "halt", "v1=100", "--waves", WAVES, "--interval", "0.3")
    try:
        wait_for("the first wave applied", lambda: _applied(world, "halt", 0))
        before = world.snapshot()
        plain = world.run("weights", "halt", "v1=50")
        assert plain.returncode == 2, plain.stderr
        assert "a rollout in waves of halt is under way" in plain.stderr
        assert world.snapshot() == before
        stopped = world.run("rollout", "waves", "halt", "--stop", "--reason", "bad change")
        assert stopped.returncode == 0, stopped.stderr
        _, stderr = command.communicate(timeout=PATIENCE)
    finally:
        world.fleet.held.discard(A)
        if command.poll() is None:
            command.kill()
    assert command.returncode == 1
    assert "stopped by" in stderr
    assert "bad change" in stderr
    plan = world.plan("halt")
    assert plan.status is WaveStatus.STOPPED
    assert [wave.undone for wave in plan.waves] == [False, False, False]
    assert world.weights(A, "halt") == {"v1": 100}  # kept, not set back
    assert world.weights(B, "halt") == {}
    again = world.run("rollout", "waves", "halt", "--stop")
    assert again.returncode == 1
    assert "no rollout in waves under way" in again.stderr


def _complete(world: World, region: str, name: str) -> bool:
    service = world.wirings[region].store.get_service(name)
    in_sync = service.rollout_state.weights == service.weights
    return in_sync and service.rollout_state.status is RolloutStatus.COMPLETE
