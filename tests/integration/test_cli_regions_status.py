"""`flotilla rollout status` and `flotilla trace rollout` of a service in several regions,
on one moto server standing in for two regions (it keeps each region's tables apart).

The world is built as production builds it: each region's environment stack through
CloudFormation, the service (`service create --region A --region B`) and its revisions
through the CLI, weights through the engine's own operation in each region, instances
and deploys through each region's store (fake agents), assignments by real scheduler
passes in each region. Each region is given a rollout of its own (other weights, other
instances), so a section showing another region's data would be caught. One region is
taken down by a TCP proxy in front of the server (`FLOTILLA_ENDPOINT_URLS` sends that
region's calls through it): a real endpoint that refuses connections.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flotilla.cli.regional_status import wave_state, waves_json
from flotilla.cli.wiring import AwsSettings, Wiring
from flotilla.engine.clock import SystemClock
from flotilla.engine.records import FailureAction, Wave, WavePlan, WaveStatus
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from tests.integration.cli_world import CliWorld
from tests.integration.test_cli_commands import Cli
from tests.support.aws import REGION, create_environment_stack, moto_server
from tests.support.faults import EndpointProxy
from tests.support.scheduler_world import FakeAgents, register

HOME, OTHER = REGION, "eu-west-1"
COUNTS = {HOME: 3, OTHER: 2}  # instances per region
PREFIXES = {HOME: "use", OTHER: "euw"}


class World(CliWorld):
    def there(self, region: str) -> Wiring:
        return self.wiring.in_region(region)

    def run(self, *args: str, **options: Any) -> Any:
        """`flotilla ARGS` with no --region of its own: the region comes from AWS_REGION,
        so the command covers every region of the service (`--region` would narrow it)."""
        env = {"AWS_REGION": HOME, **options.pop("env", {})}
        return self.cli.run(*args, with_region=False, env=env, **options)

    def settle(self, service: str, region: str, *weights: tuple[str, int]) -> None:
        """Set `weights` in `region` alone and run its scheduler and agents until done."""
        there = self.there(region)
        there.operations.set_weights(there.store.get_service(service), list(weights))
        agents = FakeAgents(there.store, SystemClock(), service)
        for _ in range(10):
            SchedulerPass(there.store, SystemClock(), PassSettings(), lambda: 1).run()
            agents.settle()
            if there.store.get_service(service).rollout_state.status.value == "complete":
                return
        raise AssertionError(f"{service} did not settle in {region}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    environment = f"rs{os.getpid()}"
    with moto_server() as endpoint:
        for region in (HOME, OTHER):
            create_environment_stack(environment, endpoint, region=region)
        settings = AwsSettings(environment=environment, region=HOME, endpoint_url=endpoint)
        made = World(Cli(endpoint, environment), Wiring(settings), tmp_path_factory.mktemp("revs"))
        yield made


@pytest.fixture(scope="module")
def web(world: World) -> str:
    """`web` in both regions: v1 everywhere on 3 instances at home; v2 on 2 instances in
    eu-west-1. The home record carries a wave plan: home done, eu-west-1 rolling."""
    world.run("service", "create", "web", "--region", HOME, "--region", OTHER)
    world.add_revisions("web", "v1", "v2")
    for region in (HOME, OTHER):
        register(world.there(region).store, SystemClock(), "web", COUNTS[region], PREFIXES[region])
    world.settle("web", HOME, ("v1", 100))
    world.settle("web", OTHER, ("v2", 100))
    home = world.there(HOME).store
    record = home.get_service("web")
    now = datetime.now(UTC)
    plan = WavePlan(
        number=1,
        waves=(
            Wave(HOME, {"a" * 64: 100}, before={}, applied_at=now, completed_at=now),
            Wave(OTHER, {"b" * 64: 100}, before={}, applied_at=now),
        ),
        bake_seconds=0,
        failure_action=FailureAction.REVERT,
        status=WaveStatus.ROLLING,
        started_at=now - timedelta(minutes=5),
        by="tester",
    )
    home.update_service(dataclasses.replace(record, waves=plan))
    return "web"


@pytest.fixture(scope="module")
def solo(world: World) -> str:
    """`solo`: a service of one region (the home region), v1 on 2 instances."""
    world.cli.ok("service", "create", "solo")
    world.add_revisions("solo", "v1")
    register(world.there(HOME).store, SystemClock(), "solo", 2, "solo")
    world.settle("solo", HOME, ("v1", 100))
    return "solo"


def take_down(proxy: EndpointProxy) -> None:
    """`proxy.down()`, then one connection of our own: its listening thread, blocked in
    `accept()` when the socket was closed, still takes one more connection, which would
    let a command's first call through (seen: the region's first read answered)."""
    proxy.down()
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", proxy.port)):
        pass


def sections(text: str) -> dict[str, str]:
    """The text under each `=== region R ===` heading, by region; before the first: ""."""
    found: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        heading = re.fullmatch(r"=== region (\S+)(?: \(home\))? ===", line)
        if heading:
            current = heading.group(1)
            found[current] = ""
            continue
        found[current] = found.get(current, "") + line + "\n"
    return found


def instance_ids(text: str) -> set[str]:
    return set(re.findall(r"\b(?:use|euw|solo)-\d{3}\b", text))


def test_status_shows_each_region_from_its_own_tables(world: World, web: str) -> None:
    ran = world.run("rollout", "status", web)
    assert ran.returncode == 0, ran.stderr
    shown = sections(ran.stdout)
    assert list(shown) == ["", HOME, OTHER]
    assert f"=== region {HOME} (home) ===" in ran.stdout
    home, other = shown[HOME], shown[OTHER]
    assert instance_ids(home) == {"use-000", "use-001", "use-002"}
    assert instance_ids(other) == {"euw-000", "euw-001"}
    assert "weights:" in home
    assert "v1=100" in home
    assert "v2=100" not in home
    assert "v2=100" in other
    assert "v1=100" not in other
    assert "3/3 running (weight 100)" in home
    assert "2/2 running (weight 100)" in other
    # The waves, before the sections: the plan's status and each wave's state.
    waves = shown[""]
    assert waves.startswith("waves: rolling (plan 1 by tester")
    assert re.search(rf"1\. {HOME}\s+done", waves)
    assert re.search(rf"2\. {OTHER}\s+rolling", waves)


def test_status_json_has_a_section_per_region_and_the_waves(world: World, web: str) -> None:
    ran = world.run("rollout", "status", web, "-o", "json")
    assert ran.returncode == 0, ran.stderr
    status = json.loads(ran.stdout)
    assert set(status) == {"service", "regions", "waves"}
    assert status["service"] == web
    assert set(status["regions"]) == {HOME, OTHER}
    for region, expected in (
        (HOME, {"v1": COUNTS[HOME]}),
        (OTHER, {"v2": COUNTS[OTHER]}),
    ):
        section = status["regions"][region]
        assert section["service"] == web
        assert {r["label"]: r["running"] for r in section["revisions"] if r["running"]} == expected
        assert {i["id"][:3] for i in section["instances"]} == {PREFIXES[region]}
        assert section["rollout"]["status"] == "complete"
    waves = status["waves"]
    assert (waves["number"], waves["status"], waves["current"]) == (1, "rolling", 1)
    assert [(w["region"], w["state"]) for w in waves["waves"]] == [
        (HOME, "done"),
        (OTHER, "rolling"),
    ]


def test_region_narrows_the_status_to_that_region(world: World, web: str) -> None:
    ran = world.run("rollout", "status", web, "--region", OTHER)
    assert ran.returncode == 0, ran.stderr
    shown = sections(ran.stdout)
    assert list(shown) == [OTHER]  # no waves: they live on the home record, not read
    assert instance_ids(ran.stdout) == {"euw-000", "euw-001"}
    home = world.run("rollout", "status", web, "--region", HOME, "-o", "json")
    narrowed = json.loads(home.stdout)
    assert set(narrowed["regions"]) == {HOME}
    assert narrowed["waves"]["status"] == "rolling"  # home: its record has the plan


def test_a_region_down_says_so_and_the_others_are_shown(world: World, web: str) -> None:
    port = int(world.cli.endpoint.rsplit(":", 1)[1])
    proxy = EndpointProxy(port)
    routes = {"FLOTILLA_ENDPOINT_URLS": f"{OTHER}={proxy.endpoint}"}
    try:
        through = world.run("rollout", "status", web, "-o", "json", env=routes)
        assert through.returncode == 0, through.stderr  # the proxy carries the region's calls
        take_down(proxy)
        ran = world.run("rollout", "status", web, env=routes)
        as_json = world.run("rollout", "status", web, "-o", "json", env=routes)
    finally:
        proxy.down()
    assert ran.returncode == 1
    shown = sections(ran.stdout)
    assert list(shown) == ["", HOME, OTHER]
    assert shown[OTHER].strip().startswith(f"region {OTHER} is unreachable: reading service")
    assert len(shown[OTHER].strip().splitlines()) == 1
    assert instance_ids(shown[HOME]) == {"use-000", "use-001", "use-002"}
    assert "Traceback" not in ran.stderr
    assert ran.stderr.strip().splitlines()[-1].startswith("error: 1 of 2 regions could not")
    assert as_json.returncode == 1
    status = json.loads(as_json.stdout)
    assert status["regions"][OTHER]["error"].startswith(f"region {OTHER} is unreachable: ")
    assert status["regions"][HOME]["service"] == web
    assert status["waves"]["status"] == "rolling"


def test_a_service_of_one_region_keeps_its_json(world: World, solo: str) -> None:
    ran = world.run("rollout", "status", solo, "-o", "json")
    assert ran.returncode == 0, ran.stderr
    status = json.loads(ran.stdout)
    assert "regions" not in status
    assert "waves" not in status
    assert status["service"] == solo
    assert status["rollout"]["status"] == "complete"
    assert {i["id"] for i in status["instances"]} == {"solo-000", "solo-001"}
    text = world.run("rollout", "status", solo).stdout
    assert "=== region" not in text
    assert text.startswith("service:")


def test_trace_rollout_draws_each_region(world: World, web: str) -> None:
    args = ("trace", "rollout", web, "--width", "100", "--color", "never")
    ran = world.run(*args)
    assert ran.returncode == 0, ran.stderr
    shown = sections(ran.stdout)
    assert list(shown) == [HOME, OTHER]
    assert f"rollout of {web} to v1 (" in shown[HOME]
    assert f"in {HOME}" in shown[HOME]
    assert f"rollout of {web} to v2 (" in shown[OTHER]
    assert f"in {OTHER}" in shown[OTHER]
    assert instance_ids(shown[HOME]) == {"use-000", "use-001", "use-002"}
    assert instance_ids(shown[OTHER]) == {"euw-000", "euw-001"}
    narrowed = world.run(*args, "--region", OTHER)
    assert narrowed.returncode == 0, narrowed.stderr
    assert list(sections(narrowed.stdout)) == [OTHER]


def test_trace_html_needs_a_region_for_a_service_of_several(world: World, web: str) -> None:
    page = world.tmp / "web.html"
    refused = world.run("trace", "rollout", web, "--html", str(page))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"error: --html draws one region, and {web} is in {HOME}, {OTHER}: "
        "give --region REGION, a page for each region"
    )
    assert not page.exists()
    ran = world.run("trace", "rollout", web, "--html", str(page), "--region", OTHER)
    assert ran.returncode == 0, ran.stderr
    html = page.read_text()
    assert f"<title>rollout of {web} to v2 (" in html
    assert f" in {OTHER}</title>" in html
    assert "euw-000" in html
    assert "use-000" not in html


def test_trace_solo_is_unchanged(world: World, solo: str) -> None:
    ran = world.run("trace", "rollout", solo, "--width", "100", "--color", "never")
    assert ran.returncode == 0, ran.stderr
    assert "=== region" not in ran.stdout
    assert f"rollout of {solo} to v1 (" in ran.stdout
    assert " in us-east-1" not in ran.stdout


def test_trace_a_region_down_is_said_and_the_others_drawn(world: World, web: str) -> None:
    port = int(world.cli.endpoint.rsplit(":", 1)[1])
    proxy = EndpointProxy(port)
    take_down(proxy)
    try:
        ran = world.run(
            "trace", "rollout", web, "--width", "100", "--color", "never",
            env={"FLOTILLA_ENDPOINT_URLS": f"{OTHER}={proxy.endpoint}"},
        )  # fmt: skip
    finally:
        proxy.down()
    assert ran.returncode == 1
    shown = sections(ran.stdout)
    assert shown[OTHER].strip().startswith(f"region {OTHER} is unreachable: ")
    assert instance_ids(shown[HOME]) == {"use-000", "use-001", "use-002"}


def test_trace_a_region_without_the_rollout_says_so(world: World, web: str) -> None:
    """Only eu-west-1 rolled out v2: the home region says it has none, and that is no
    failure (a rollout in waves may not have reached a region yet)."""
    ran = world.run("trace", "rollout", web, "--revision", "v2", "--width", "100")
    assert ran.returncode == 0, ran.stderr
    shown = sections(ran.stdout)
    assert shown[HOME].strip().startswith(f"no deploys of service {web!r} to revision ")
    assert shown[HOME].strip().endswith("check the service name, --revision and --since")
    assert f"in region {HOME}" in shown[HOME]
    assert instance_ids(shown[OTHER]) == {"euw-000", "euw-001"}


def test_the_command_region_down_is_one_line(world: World, web: str) -> None:
    """Where the command starts is where it learns the service's regions: that region
    down, it says so in one line and exits 1."""
    port = int(world.cli.endpoint.rsplit(":", 1)[1])
    proxy = EndpointProxy(port)
    take_down(proxy)
    try:
        ran = world.run(
            "rollout", "status", web, env={"FLOTILLA_ENDPOINT_URLS": f"{HOME}={proxy.endpoint}"}
        )
    finally:
        proxy.down()
    assert ran.returncode == 1
    assert ran.stdout == ""
    error = [line for line in ran.stderr.splitlines() if not line.startswith("note: ")]
    assert len(error) == 1
    assert error[0].startswith(f"error: region {HOME} is unreachable: reading service")


def test_a_service_of_one_region_with_region_given_keeps_its_json(world: World, solo: str) -> None:
    status = json.loads(world.cli.ok("rollout", "status", solo, "-o", "json"))  # --region given
    assert "regions" not in status
    assert {i["id"] for i in status["instances"]} == {"solo-000", "solo-001"}


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def plan_of(status: WaveStatus, *waves: Wave, reason: str | None = None) -> WavePlan:
    return WavePlan(
        number=2,
        waves=waves,
        bake_seconds=600,
        failure_action=FailureAction.REVERT,
        status=status,
        started_at=NOW - timedelta(hours=1),
        by="tester",
        reason=reason,
    )


def states(plan: WavePlan, now: datetime = NOW) -> list[str]:
    return [wave_state(plan, index, now)[1] for index in range(len(plan.waves))]


def test_each_wave_says_where_it_stands() -> None:
    done = Wave(HOME, {}, before={}, applied_at=NOW, completed_at=NOW - timedelta(minutes=5))
    applied = Wave(OTHER, {}, before={}, applied_at=NOW)
    fresh = Wave("ap-southeast-2", {})
    # The first region baking before the next begins: until its completion + the bake.
    baking = plan_of(WaveStatus.ROLLING, done, Wave(OTHER, {}), fresh)
    assert states(baking) == ["baking until 2026-01-01 12:05:00 UTC", "waiting", "waiting"]
    assert states(baking, NOW + timedelta(minutes=6)) == ["done", "waiting", "waiting"]
    assert states(plan_of(WaveStatus.ROLLING, done, applied, fresh)) == [
        "done",
        "rolling",
        "waiting",
    ]
    held = plan_of(WaveStatus.HELD, done, applied, fresh, reason="eu-west-1 is unreachable")
    assert states(held) == ["done", "held: eu-west-1 is unreachable", "waiting"]
    undone = dataclasses.replace(done, undone=True)
    stopped = plan_of(WaveStatus.STOPPED, undone, applied, fresh, reason="2 deploys failed")
    assert states(stopped) == [
        "undone: its weights were set back when the waves stopped",
        "stopped",
        "not started: the waves stopped before it",
    ]
    complete = dataclasses.replace(applied, completed_at=NOW)
    assert states(plan_of(WaveStatus.COMPLETE, done, complete)) == ["done", "done"]
    shown = waves_json(held, NOW)
    assert (shown["status"], shown["reason"], shown["current"]) == (
        "held",
        "eu-west-1 is unreachable",
        1,
    )
    assert [w["state"] for w in shown["waves"]] == ["done", "held", "waiting"]
