"""The tables on Amazon's DynamoDB Local, everything else on a moto server, chosen the way
botocore lets an operator choose: `AWS_ENDPOINT_URL` for every service and
`AWS_ENDPOINT_URL_DYNAMODB` for DynamoDB alone (no `FLOTILLA_ENDPOINT_URL`). The rollout
benchmark runs this way (scripts/benchlib/rollout.py); here agents, a scheduler and the
CLI roll a service forward on it, and nothing reaches moto's tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.adapters.process_runtime import ProcessRuntime
from flotilla.engine.records import RolloutPolicy, Service
from flotilla.engine.revisions import build_revision
from tests.support.agents import (
    AgentProcess,
    AwsWorld,
    aws_world,
    flotilla_cli,
    start_agent,
    start_scheduler,
    wait_for,
)
from tests.support.aws import REGION, dynamodb_client

pytestmark = pytest.mark.slow
SLEEPER = "[Service]\nExecStart=/bin/sleep 600\n"
INSTANCES = tuple(f"i-split-{n}" for n in range(3))


@pytest.fixture(scope="module")
def world() -> Iterator[AwsWorld]:
    with aws_world(f"split{os.getpid()}", dynamodb_local=True) as made:
        yield made


def add_revision(world: AwsWorld, label: str) -> str:
    revision = build_revision(
        "split", label, {"app.service": SLEEPER}, {"app.service": {"TOKEN": "t0p-" + label}},
        world.secrets, world.clock.now(),
    )  # fmt: skip
    return world.store.put_revision(revision).id


def running(world: AwsWorld) -> dict[str, str | None]:
    return {i.id: i.current_revision for i in world.store.list_instances("split")}


def test_agents_a_scheduler_and_the_cli_work_with_the_tables_on_their_own_endpoint(
    world: AwsWorld, tmp_path: Path
) -> None:
    assert "FLOTILLA_ENDPOINT_URL" not in world.agent_environment()
    world.store.create_service(
        Service("split", settle_seconds=1, rollout=RolloutPolicy(max_in_flight="1"))
    )
    v1, v2 = add_revision(world, "v1"), add_revision(world, "v2")
    processes: list[AgentProcess] = [start_scheduler(world, tmp_path, "s1")]
    try:
        processes += [start_agent(world, tmp_path, "split", i) for i in INSTANCES]
        wait_for(lambda: len(running(world)) == len(INSTANCES), 60, "every agent registered")
        for label, revision, weights in (("v1", v1, ["v1=100"]), ("v2", v2, ["v1=0", "v2=100"])):
            result = flotilla_cli(world, "weights", "split", *weights)
            assert result.returncode == 0, result.stderr
            assert "warning" not in result.stderr  # the scheduler's queue (moto) was reached
            wait_for(
                lambda revision=revision: running(world) == dict.fromkeys(INSTANCES, revision),
                120,
                f"{label} on every instance",
            )
        shown = flotilla_cli(world, "rollout", "status", "split")
        assert shown.returncode == 0, shown.stderr
        assert "complete" in shown.stdout
    finally:
        for process in processes:
            process.kill()
        for instance_id in INSTANCES:
            runtime = ProcessRuntime(tmp_path / instance_id / "process")
            runtime.stop(runtime.owned_units())
    # The tables the moto server's stack made are there, and were never written to.
    moto_tables = dynamodb_client(world.endpoint, REGION)
    for table in (world.tables.services, world.tables.instances, world.tables.deploys):
        assert moto_tables.scan(TableName=table)["Count"] == 0
