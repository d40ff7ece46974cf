"""Scheduler processes, agent processes and the CLI on a moto server: failover and revert.

Schedulers run with a ten-minute timer, so after their first full pass only the SQS
events sent by the CLI and the agents can make them act.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from flotilla.adapters.process_runtime import ProcessRuntime
from flotilla.engine.records import RolloutPolicy, RolloutState, RolloutStep, Service
from flotilla.engine.revisions import build_revision
from flotilla.engine.updates import modify_service
from tests.support.agents import (
    AgentProcess,
    AwsWorld,
    aws_world,
    flotilla_cli,
    start_agent,
    start_scheduler,
    wait_for,
)

pytestmark = pytest.mark.slow
SLEEPER = "[Service]\nExecStart=/bin/sleep 600\n"
BROKEN = "[Service]\nExecStart=/bin/sh -c 'exit 3'\n"


@pytest.fixture(scope="module")
def world() -> Iterator[AwsWorld]:
    with aws_world(f"sched{os.getpid()}") as made:
        yield made


class Fleet:
    def __init__(self, world: AwsWorld, work: Path, service: str) -> None:
        self.world, self.work, self.service = world, work, service
        self.processes: list[AgentProcess] = []
        # Instances are born into one service: every test gets its own.
        self.instances = tuple(f"i-{service}-{n}" for n in range(3))

    def add_revision(self, label: str, unit: str = SLEEPER) -> str:
        revision = build_revision(
            self.service, label, {"app.service": unit}, {"app.service": {"TOKEN": "t0p-" + label}},
            self.world.secrets, self.world.clock.now(),
        )  # fmt: skip
        return self.world.store.put_revision(revision).id

    def running(self) -> dict[str, str | None]:
        return {i.id: i.current_revision for i in self.world.store.list_instances(self.service)}

    def wait_until_all_run(self, revision: str, what: str) -> None:
        wait_for(lambda: self.running() == dict.fromkeys(self.instances, revision), 120, what)

    def weights(self, *pairs: str) -> None:
        result = flotilla_cli(self.world, "weights", self.service, *pairs)
        assert result.returncode == 0, result.stderr
        assert "warning" not in result.stderr  # the scheduler was woken

    def start_on(self, revision: str) -> dict[str, AgentProcess]:
        """Two schedulers (one leads) and an agent per instance, every instance on
        `revision`; returns the schedulers by name."""
        schedulers = {name: start_scheduler(self.world, self.work, name) for name in ("s1", "s2")}
        self.processes += schedulers.values()
        self.processes += [
            start_agent(self.world, self.work, self.service, i) for i in self.instances
        ]
        wait_for(lambda: leader(self.world) is not None, 30, "a leader")
        label = next(
            r.label for r in self.world.store.list_revisions(self.service) if r.id == revision
        )
        self.weights(f"{label}=100")
        self.wait_until_all_run(revision, f"{label} everywhere")
        return schedulers

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
        for instance_id in self.instances:
            runtime = ProcessRuntime(self.work / instance_id / "process")
            runtime.stop(runtime.owned_units())


@pytest.fixture
def fleet(world: AwsWorld, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    service = request.node.name.split("_")[1]
    world.store.create_service(
        Service(
            service,
            settle_seconds=1,
            rollout=RolloutPolicy(max_in_flight="2", max_failures=1),
        )
    )
    made = Fleet(world, tmp_path, service)
    try:
        yield made
    finally:
        made.stop()


def leader(world: AwsWorld) -> str | None:
    holders = world.locks.holders("scheduler")
    return holders[0].owner if holders else None


def test_failover_a_standby_takes_over_from_a_killed_leader_and_finishes_the_rollout(
    fleet: Fleet,
) -> None:
    v1, v2 = fleet.add_revision("v1"), fleet.add_revision("v2")
    schedulers = fleet.start_on(v1)

    first = leader(fleet.world)
    assert first in schedulers
    schedulers[first].kill()  # SIGKILL: its lease is left to expire
    fleet.weights("v1=0", "v2=100")
    fleet.wait_until_all_run(v2, "v2 everywhere, placed by the standby")
    survivor = leader(fleet.world)
    assert survivor is not None
    assert survivor != first
    # The deploys' `deploy_finished` events make the survivor record the end of the rollout.
    wait_for(
        lambda: (
            fleet.world.store.get_service(fleet.service).rollout_state.status.value == "complete"
        ),
        30,
        "the rollout recorded complete",
    )
    # The last deploy's `unlocked` step may still be running.
    wait_for(
        lambda: fleet.world.locks.holders(f"deploy/{fleet.service}") == [],
        30,
        "the deploy lock released",
    )


def test_revert_a_failing_revision_restores_the_previous_weights(fleet: Fleet) -> None:
    v1, broken = fleet.add_revision("v1"), fleet.add_revision("bad", BROKEN)
    fleet.processes.append(start_scheduler(fleet.world, fleet.work, "solo"))
    fleet.processes += [
        start_agent(fleet.world, fleet.work, fleet.service, i) for i in fleet.instances
    ]
    fleet.weights("v1=100")
    fleet.wait_until_all_run(v1, "v1 everywhere")

    fleet.weights("v1=0", "bad=100")
    wait_for(
        lambda: fleet.world.store.get_service(fleet.service).weights.get(v1) == 100,
        120,
        "the automatic revert",
    )
    service = fleet.world.store.get_service(fleet.service)
    assert service.weights.get(broken, 0) == 0
    reverted = [entry for entry in service.history if entry.kind == "reverted"]
    assert reverted, service.history
    assert reverted[-1].reason.startswith("restored the last good weights")
    assert reverted[-1].weights.get(v1) == 100
    fleet.wait_until_all_run(v1, "v1 everywhere again")
    # The last deploy's `unlocked` step may still be running.
    wait_for(
        lambda: fleet.world.locks.holders(f"deploy/{fleet.service}") == [],
        30,
        "the deploy lock released",
    )
    # At most max_in_flight instances ever tried the broken revision.
    tried = {
        d.instance_id
        for i in fleet.instances
        for d in fleet.world.store.list_instance_deploys(fleet.service, i)
        if d.to_revision == broken
    }
    assert 1 <= len(tried) <= 2


def test_bake_a_leader_killed_mid_bake_leaves_its_step_and_bake_to_the_standby(
    fleet: Fleet,
) -> None:
    bake = 8
    modify_service(
        fleet.world.store,
        fleet.service,
        lambda s: dataclasses.replace(
            s,
            rollout=dataclasses.replace(
                s.rollout, steps=(RolloutStep("1", bake), RolloutStep("100%"))
            ),
        ),
    )
    v1, v2 = fleet.add_revision("v1"), fleet.add_revision("v2")
    schedulers = fleet.start_on(v1)

    def state() -> RolloutState:
        return fleet.world.store.get_service(fleet.service).rollout_state

    fleet.weights("v1=0", "v2=100")
    wait_for(lambda: state().baking_since is not None, 120, "step 1 done and baking")
    baking_since = state().baking_since
    assert baking_since is not None
    assert sorted(fleet.running().values()).count(v2) == 1
    first = leader(fleet.world)
    assert first in schedulers
    schedulers[first].kill()  # SIGKILL in the middle of the bake
    fleet.wait_until_all_run(v2, "v2 everywhere, after the bake, by the standby")
    service = fleet.world.store.get_service(fleet.service)
    assert leader(fleet.world) not in (None, first)
    step_two = [e for e in service.history if e.reason.startswith("step 2 of 2")]
    assert step_two
    assert step_two[-1].at >= baking_since + timedelta(seconds=bake)  # the bake held
