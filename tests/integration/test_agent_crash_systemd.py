"""The crash matrix on real parts: a real agent process deploying onto a real systemd user
manager, behind a classic ELB, against a moto server. The agent is SIGKILLed in every state
(before the step, and after its effect but before its checkpoint), restarted, and must
finish: the new units active and only those, the instance in service in the load balancer,
the lock free, the checkpoint done with `succeeded`, and one trace with a resume span.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.ec2.models.amis import AMIS

from flotilla.adapters.elb_classic import ClassicLoadBalancer
from flotilla.adapters.systemd import SystemdRuntime
from flotilla.engine import units
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.liveness import expiry_for
from flotilla.engine.ports import TargetState
from flotilla.engine.records import Instance, LoadBalancerKind, LoadBalancerRef, Revision, Service
from flotilla.engine.revisions import build_revision
from flotilla.machines import deploy as machine
from tests.support.agents import AwsWorld, aws_world, start_agent, wait_for
from tests.support.aws import REGION
from tests.support.systemd_manager import PrivateSystemdManager

pytestmark = [pytest.mark.slow, pytest.mark.systemd]
ELB = "crash-elb"
# Writes its environment where the test can read it, then stays up.
UNIT = "[Service]\nType=exec\nExecStart=/bin/sh -c 'env > %t/{label}.env; exec sleep 600'\n"
_services = itertools.count(1)


class Fleet:
    def __init__(self, world: AwsWorld, manager: PrivateSystemdManager, work: Path) -> None:
        self.world = world
        self.manager = manager
        self.work = work
        self.ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=world.endpoint)
        self.elb_client = boto3.client("elb", region_name=REGION, endpoint_url=world.endpoint)
        self.elb_client.create_load_balancer(
            LoadBalancerName=ELB,
            Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 8080}],
            AvailabilityZones=[f"{REGION}a"],
        )
        self.balancer = ClassicLoadBalancer(self.elb_client, ELB)

    def new_instance_id(self) -> str:
        reservation = self.ec2.run_instances(
            ImageId=AMIS[0]["ami_id"], MinCount=1, MaxCount=1, InstanceType="t3.micro"
        )
        return str(reservation["Instances"][0]["InstanceId"])

    def runtime_options(self) -> list[str]:
        return ["--runtime", "systemd", "--bus-address", self.manager.bus_address,
                "--unit-dir", str(self.manager.unit_dir)]  # fmt: skip

    def runtime(self, instance_id: str) -> SystemdRuntime:
        return SystemdRuntime(
            bus_address=self.manager.bus_address,
            unit_dir=self.manager.unit_dir,
            environment_dir=self.work / instance_id / "env",
        )

    def active(self, instance_id: str) -> list[str]:
        runtime = self.runtime(instance_id)
        return [s.name for s in runtime.status(runtime.owned_units()) if s.active_state == "active"]

    def clean(self, instance_id: str) -> None:
        runtime = self.runtime(instance_id)
        runtime.remove(runtime.owned_units())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with aws_world(f"sd{os.getpid()}") as world, PrivateSystemdManager() as manager:
        yield Fleet(world, manager, tmp_path_factory.mktemp("fleet"))


def add_revision(world: AwsWorld, service: str, label: str) -> Revision:
    revision = build_revision(
        service, label, {"app.service": UNIT.format(label=label)},
        {"app.service": {"TOKEN": f"token-{label}"}}, world.secrets, world.clock.now(),
    )  # fmt: skip
    return world.store.put_revision(revision)


def assign(world: AwsWorld, instance_id: str, revision: Revision) -> None:
    current = world.store.get_instance(revision.service, instance_id)
    world.store.set_assignment(
        revision.service, instance_id, revision.id, expected_version=current.assignment_version
    )


def prepare(fleet: Fleet) -> tuple[str, str, Revision, Revision]:
    world = fleet.world
    service = f"sd-{next(_services)}"
    world.store.create_service(
        Service(
            service,
            load_balancer=LoadBalancerRef(LoadBalancerKind.CLASSIC, ELB),
            drain_timeout_seconds=60,
            health_timeout_seconds=60,
            settle_seconds=1,
        )
    )
    v1, v2 = add_revision(world, service, "v1"), add_revision(world, service, "v2")
    instance_id = fleet.new_instance_id()
    now = world.clock.now()
    world.store.register_instance(
        Instance(instance_id, service, "test", now, now), expires_at=expiry_for(now)
    )
    assign(world, instance_id, v1)
    agent = start_agent(world, fleet.work, service, instance_id, runtime=fleet.runtime_options())
    # The v1 deploy finished, not just running v1 (its `unlocked` step comes after): else
    # the next agent resumes it first and its fault hook kills it in the wrong deploy.
    wait_for(
        lambda: (
            all(d.finished for d in world.store.list_instance_deploys(service, instance_id))
            and world.store.get_instance(service, instance_id).current_revision == v1.id
        ),
        60,
        "v1 deployed",
    )
    assert agent.terminate() == 0
    return service, instance_id, v1, v2


def trace_spans(path: Path, traceparent: str | None) -> list[dict[str, Any]]:
    assert traceparent
    trace_id = traceparent.split("-")[1]
    spans = []
    for line in path.read_text().splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                spans += [s for s in scope["spans"] if s["traceId"] == trace_id]
    return spans


CASES = [
    (state, point) for state in machine.HAPPY_PATH[:-1] for point in ("before-step", "after-effect")
]


@pytest.mark.parametrize(("state", "point"), CASES, ids=[f"{s}-{p}" for s, p in CASES])
def test_a_killed_agent_finishes_the_deploy_on_systemd_behind_a_load_balancer(
    fleet: Fleet, state: str, point: str
) -> None:
    world = fleet.world
    service, instance_id, _v1, v2 = prepare(fleet)
    try:
        assign(world, instance_id, v2)
        doomed = start_agent(
            world,
            fleet.work,
            service,
            instance_id,
            fault=f"{state}:{point}",
            runtime=fleet.runtime_options(),
        )
        assert doomed.process.wait(timeout=60) == -9, "the fault hook did not kill the agent"

        def to_v2() -> list[DeployCheckpoint]:
            return [
                d
                for d in world.store.list_instance_deploys(service, instance_id)
                if d.to_revision == v2.id
            ]

        if state == machine.INITIAL_STATE:
            # `pending` is performed before the deploy is first written (in `locking`):
            # nothing was stored, and the next agent creates it as the first one would have.
            assert to_v2() == []
        else:
            (deploy,) = to_v2()
            assert deploy.state == state
            assert not deploy.finished

        survivor = start_agent(
            world, fleet.work, service, instance_id, runtime=fleet.runtime_options()
        )
        wait_for(lambda: any(d.finished for d in to_v2()), 90, "the resumed deploy")
        (deploy,) = to_v2()
        assert survivor.terminate() == 0

        done = world.store.get_deploy(deploy.id)
        assert done.outcome is Outcome.SUCCEEDED, done.error
        assert fleet.active(instance_id) == [units.installed_name("app.service", v2.id)]
        assert fleet.runtime(instance_id).owned_units() == [
            units.installed_name("app.service", v2.id)
        ]
        assert fleet.balancer.state(instance_id) is TargetState.HEALTHY
        assert world.locks.holders(f"deploy/{service}") == []
        names = [s["name"] for s in trace_spans(fleet.work / "spans.jsonl", done.trace_parent)]
        if state != "pending":
            assert [t.state for t in done.history if t.resumed] == [state]
            assert names.count("resume") == 1
        assert f"deploy.{state}" in names
        environment = (fleet.manager.runtime_dir / "v2.env").read_text()
        assert "TOKEN=token-v2" in environment.splitlines()
    finally:
        fleet.clean(instance_id)
