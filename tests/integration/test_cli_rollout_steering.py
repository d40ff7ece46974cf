"""`service create|update|show` with a rollout policy, `rollout status`'s waits and
`rollout promote`, on a moto server (issue 16).

Built as tests/integration/test_cli_rollout.py builds its world: the environment stack
through CloudFormation, services and revisions through the CLI, instances and deploys
through the store (fake agents), assignments by real scheduler passes on the real clock
(the CLI reads the same clock, so a bake's time left is real).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from flotilla.engine.clock import SystemClock
from flotilla.engine.records import Instance, RolloutPolicy
from flotilla.scheduler.failures import budget_rule
from tests.integration.cli_world import CliWorld, cli_world
from tests.support.scheduler_world import LONG, FakeAgents, register

World = CliWorld


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with cli_world("rs", tmp_path_factory.mktemp("revs")) as made:
        yield made


def settled(world: World, service: str, count: int, *settings: str) -> FakeAgents:
    """`service` with `count` instances on v1 (v2 added), its rollout complete."""
    world.cli.ok("service", "create", service, *settings)
    world.add_revisions(service, "v1", "v2")
    register(world.store, SystemClock(), service, count, prefix=service)
    world.cli.ok("weights", service, "v1=100")
    agents = FakeAgents(world.store, SystemClock(), service)
    for _ in range(5):
        world.scheduler_pass()
        agents.settle()
    world.scheduler_pass()
    assert world.store.get_service(service).rollout_state.status.value == "complete"
    return agents


def fields(text: str) -> dict[str, str]:
    """`name: value` lines as printed by `service show`."""
    return {
        name.strip(): value.strip()
        for name, _, value in (line.partition(":") for line in text.splitlines())
    }


def kinds(status: dict[str, Any]) -> list[str]:
    return [wait["kind"] for wait in status["waiting_for"]]


def test_service_show_prints_the_whole_policy(world: World) -> None:
    world.cli.ok(
        "service", "create", "policy", "--steps", "1:5m,25%:90s,pause,100%",
        "--webhook", "https://ci.example.com/confirm", "--progress-deadline", "15m",
        "--failure-action", "hold", "--revert-max-in-flight", "50%", "--max-failures", "3",
    )  # fmt: skip
    shown = json.loads(world.cli.ok("service", "show", "policy", "-o", "json"))
    policy = shown["rollout_policy"]
    assert policy["steps_text"] == "1:5m,25%:90s,pause,100%"
    assert policy["steps"][2] == {"amount": None, "bake_seconds": 0}
    assert policy["webhooks"] == ["https://ci.example.com/confirm"]
    assert policy["alarms"] == []
    assert policy["progress_deadline_seconds"] == 900
    assert policy["failure_action"] == "hold"
    assert policy["revert_max_in_flight"] == "50%"
    stored = world.store.get_service("policy").rollout
    assert policy["failure_budget"] == budget_rule(stored)
    shown_text = fields(world.cli.ok("service", "show", "policy"))
    assert shown_text["steps"] == "1:5m,25%:90s,pause,100%"
    assert shown_text["progress deadline"] == "15m"
    assert shown_text["revert pace"] == "50%"
    assert shown_text["failure budget"] == budget_rule(stored)
    assert "count >= max_failures" in shown_text["failure budget"]

    world.cli.ok(
        "service", "update", "policy", "--steps", "none", "--no-webhooks",
        "--progress-deadline", "0", "--revert-max-in-flight", "none",
    )  # fmt: skip
    assert world.store.get_service("policy").rollout == RolloutPolicy(
        max_failures=3, failure_action=stored.failure_action, progress_deadline_seconds=0
    )
    shown_text = fields(world.cli.ok("service", "show", "policy"))
    assert shown_text["steps"] == "none (one step of 100%, no bake)"
    assert shown_text["progress deadline"] == "off"


def test_status_names_slots_and_deploys_and_silent_instances(world: World) -> None:
    settled(world, "slots", 3)
    world.cli.ok("weights", "slots", "v1=0", "v2=100")
    assert world.scheduler_pass().assignments_written == 1
    status = world.status("slots")
    assert kinds(status) == ["deploys", "slot", "deadline"]
    slot = status["waiting_for"][1]
    assert slot["text"] == "2 instance(s) wait for a free slot of 1"
    assert status["waiting_for"][2]["until"] is not None  # the progress deadline
    text = world.cli.ok("rollout", "status", "slots")
    assert "waiting for:" in text
    assert "slot: 2 instance(s) wait for a free slot of 1" in text

    # An instance last heard from 5 minutes ago (two heartbeats missed, TTL not reached).
    now = SystemClock().now()
    quiet = now - timedelta(minutes=5)
    world.store.register_instance(
        Instance("slots-quiet", "slots", "test", quiet, quiet), expires_at=now + LONG
    )
    status = world.status("slots")
    assert "silent" in kinds(status)
    silent = next(w for w in status["waiting_for"] if w["kind"] == "silent")
    assert "slots-quiet" in silent["text"]


def test_a_bake_waits_and_promote_skips_it(world: World) -> None:
    agents = settled(world, "baked", 3, "--steps", "1:10m,100%")
    before = world.cli.snapshot()
    refusal = world.cli.run("rollout", "promote", "baked")
    assert refusal.returncode == 2, refusal.stderr
    assert "no rollout is rolling" in refusal.stderr
    assert world.cli.snapshot() == before

    world.cli.ok("weights", "baked", "v1=0", "v2=100")
    world.scheduler_pass()  # step 1: one instance moves
    agents.settle()
    world.scheduler_pass()  # its deploy ended: the step bakes
    status = world.status("baked")
    assert kinds(status) == ["bake"]
    bake = status["waiting_for"][0]
    assert bake["text"].startswith("step 1 of 2 (1, bake 600 s) bakes until")
    assert bake["until"] is not None
    assert "min" in world.cli.ok("rollout", "status", "baked").split("bake: ")[1].splitlines()[0]

    out = json.loads(world.cli.ok("rollout", "promote", "baked", "-o", "json"))
    assert out["changed"] is True
    assert out["message"].startswith("promoted baked: the scheduler skips the current wait")
    record = world.store.get_service("baked")
    assert record.promotion is not None
    assert record.promotion.number == 1
    assert record.history[-1].kind == "promoted"
    report = world.scheduler_pass()  # the bake is skipped: step 2 moves the other two
    assert report.assignments_written == 1  # max_in_flight 1
    assert world.store.get_service("baked").rollout_state.step == 1
    text = world.cli.ok("rollout", "promote", "baked", "--full")
    assert "every wait to the end" in text
    assert world.store.get_service("baked").promotion.number == 2  # type: ignore[union-attr]
