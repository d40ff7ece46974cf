"""`flotilla rollout plan` matches what the rollout then does, instance for instance and wave
for wave, on a moto server (issue 16).

The world is built as in tests/integration/test_cli_rollout.py: the environment stack
through CloudFormation, services and revisions through the CLI, instances and deploys
through the store (fake agents that succeed), assignments by real scheduler passes. The
scheduler runs on a fake clock that jumps to each `wake_at` when a pass moved nothing, so
bake times pass at once; a wave of the real rollout is the instances one pass assigned a
revision they do not run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from flotilla.engine.clock import FakeClock, SystemClock
from flotilla.engine.records import RolloutStatus
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from tests.integration.cli_world import CliWorld, cli_world
from tests.support.scheduler_world import FakeAgents, register


class World(CliWorld):
    def add_units(self, service: str, label: str, units: tuple[str, ...]) -> None:
        files = {unit: f"[Service]\nExecStart=/usr/bin/{unit} {label}\n" for unit in units}
        self.add_revision(service, label, files)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with cli_world("rp", tmp_path_factory.mktemp("revs")) as shared:
        yield World(shared.cli, shared.wiring, shared.tmp)


def roll(world: World, service: str, clock: FakeClock) -> list[dict[str, Any]]:
    """Scheduler passes and agents until the rollout completes: the waves it made."""
    store = world.store
    agents = FakeAgents(store, clock, service)
    waves: list[dict[str, Any]] = []
    for _ in range(80):
        before = {i.id: i.assigned_revision for i in store.list_instances(service)}
        passes = SchedulerPass(store, clock, PassSettings(), lambda: 1)
        report = passes.run([service])
        assert not report.failed, report.failed
        moved = sorted(
            i.id
            for i in store.list_instances(service)
            if i.assigned_revision != before[i.id]
            and i.assigned_revision not in (None, i.current_revision)
        )
        record = store.get_service(service)
        if moved:
            waves.append({"instances": moved, "step": record.rollout_state.step + 1})
        agents.settle()
        state = store.get_service(service).rollout_state
        if state.status is RolloutStatus.COMPLETE and state.weights == record.weights:
            return waves
        wake = report.wake_at.get(service)
        if not moved and wake is not None and wake > clock.now():
            clock.advance((wake - clock.now()).total_seconds())
    raise AssertionError(f"the rollout of {service} did not complete: {waves}")


def prepare(world: World, service: str, count: int, *settings: str) -> FakeClock:
    """`service` with `count` instances settled on v1, and v2 (with one more unit) added."""
    world.cli.ok("service", "create", service, *settings)
    world.add_units(service, "v1", ("web.service",))
    world.add_units(service, "v2", ("web.service", "worker.service"))
    clock = FakeClock(SystemClock().now())
    register(world.store, clock, service, count, prefix=service)
    world.cli.ok("weights", service, "v1=100")
    roll(world, service, clock)
    return clock


def planned(world: World, service: str, *pairs: str) -> dict[str, Any]:
    before = world.cli.snapshot()
    document: dict[str, Any] = json.loads(
        world.cli.ok("rollout", "plan", service, *pairs, "-o", "json")
    )
    assert world.cli.snapshot() == before, "rollout plan changed stored state"
    return document


def waves_of(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"instances": sorted(m["instance"] for m in wave["instances"]), "step": wave["step"]}
        for wave in plan["waves"]
    ]


def test_the_plan_of_a_step_plan_is_what_the_rollout_does(world: World) -> None:
    clock = prepare(world, "stepped", 6, "--max-in-flight", "2", "--steps", "1:30s,50%:1m,100%")
    plan = planned(world, "stepped", "v1=0", "v2=100")
    assert plan["ends"] == "complete"
    assert plan["moves"] == 6
    # Step 1 moves one instance, step 2 two more (50 % of 6 is 3 begun), step 3 the last
    # three at two at a time.
    assert [len(w["instances"]) for w in plan["waves"]] == [1, 2, 2, 1]
    assert [w["step"] for w in plan["waves"]] == [1, 2, 3, 3]
    kinds = [item["kind"] for item in plan["timeline"]]
    assert kinds == ["step", "wave", "bake", "step", "wave", "bake", "step", "wave", "wave"]
    bakes = [item["seconds"] for item in plan["timeline"] if item["kind"] == "bake"]
    assert bakes == [30, 60]
    for wave in plan["waves"]:
        for move in wave["instances"]:
            assert move["from"]["label"] == "v1"
            assert move["to"]["label"] == "v2"
            assert move["restarts"] == ["web.service", "worker.service"]

    text = world.cli.ok("rollout", "plan", "stepped", "v1=0", "v2=100")
    assert "nothing is changed" in text
    assert "step 2 of 3 (50%, bake 60 s)" in text
    assert "bakes 30 s" in text
    assert "web.service, worker.service" in text
    assert "restarts every unit of the old revision and of the new one" in text

    world.cli.ok("weights", "stepped", "v1=0", "v2=100")
    assert roll(world, "stepped", clock) == waves_of(plan)


def test_the_plan_at_two_in_flight_is_what_the_rollout_does(world: World) -> None:
    clock = prepare(world, "paced", 5, "--max-in-flight", "2")
    plan = planned(world, "paced", "v2=100", "v1=0")
    assert [len(w["instances"]) for w in plan["waves"]] == [2, 2, 1]
    assert all(item["kind"] == "wave" for item in plan["timeline"])
    world.cli.ok("weights", "paced", "v1=0", "v2=100")
    assert roll(world, "paced", clock) == waves_of(plan)


def test_a_plan_with_a_pause_promotes_it_and_says_so(world: World) -> None:
    prepare(world, "gated", 3, "--steps", "1,pause,100%")
    plan = planned(world, "gated", "v1=0", "v2=100")
    pauses = [item for item in plan["timeline"] if item["kind"] == "pause"]
    assert len(pauses) == 1
    assert "rollout promote gated" in pauses[0]["text"]
    assert [len(w["instances"]) for w in plan["waves"]] == [1, 1, 1]
    assert plan["ends"] == "complete"


def test_plan_with_the_weights_in_force_moves_nothing(world: World) -> None:
    prepare(world, "still", 2)
    plan = planned(world, "still", "v1=100")
    assert plan["waves"] == []
    assert plan["ends"] == "complete"
    assert "no instance would move" in world.cli.ok("rollout", "plan", "still", "v1=100")
