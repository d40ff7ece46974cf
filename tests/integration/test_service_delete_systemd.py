"""Deleting a service on real parts: a `flotilla scheduler` process, two `flotilla agent`
processes each on its own private systemd user manager (two machines), a classic ELB and
the store on a moto server, and the CLI as an operator runs it. The service runs v1 on
both instances; `flotilla service delete` marks it, the scheduler assigns both instances
none, each agent's unassignment deploy deregisters it and stops and removes every unit
and environment file, and the scheduler then deletes the service record.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto.ec2.models.amis import AMIS

from flotilla.adapters.elb_classic import ClassicLoadBalancer
from flotilla.adapters.systemd import SystemdRuntime
from flotilla.engine.checkpoint import Outcome
from flotilla.engine.errors import NotFoundError
from flotilla.engine.ports import TargetState
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
from tests.support.aws import REGION
from tests.support.systemd_manager import PrivateSystemdManager

pytestmark = [pytest.mark.slow, pytest.mark.systemd]
ELB = "delete-elb"
SERVICE = "doomed"
UNITS = {
    "web.service": "[Service]\nType=exec\nExecStart=/bin/sleep 600\n",
    "worker.service": "[Service]\nType=exec\nExecStart=/bin/sleep 601\n",
}


@dataclass
class Machine:
    """One instance: its EC2 id, its own systemd manager and its agent's state dir."""

    instance_id: str
    manager: PrivateSystemdManager
    state_dir: Path

    def runtime_options(self) -> list[str]:
        return ["--runtime", "systemd", "--bus-address", self.manager.bus_address,
                "--unit-dir", str(self.manager.unit_dir)]  # fmt: skip

    def runtime(self) -> SystemdRuntime:
        return SystemdRuntime(
            bus_address=self.manager.bus_address,
            unit_dir=self.manager.unit_dir,
            environment_dir=self.state_dir / "env",
        )

    def active(self) -> list[str]:
        runtime = self.runtime()
        return sorted(
            s.name for s in runtime.status(runtime.owned_units()) if s.active_state == "active"
        )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[AwsWorld, list[Machine], Path]]:
    with contextlib.ExitStack() as stack:
        world = stack.enter_context(aws_world(f"del{os.getpid()}"))
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=world.endpoint)
        machines = []
        for _ in range(2):
            reservation = ec2.run_instances(
                ImageId=AMIS[0]["ami_id"], MinCount=1, MaxCount=1, InstanceType="t3.micro"
            )
            instance_id = str(reservation["Instances"][0]["InstanceId"])
            manager = stack.enter_context(PrivateSystemdManager())
            machines.append(Machine(instance_id, manager, tmp_path / instance_id))
        yield world, machines, tmp_path


def ok(world: AwsWorld, *arguments: str) -> str:
    result = flotilla_cli(world, *arguments)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_deleting_a_running_service_stops_its_units_and_deregisters_then_deletes_it(
    world: tuple[AwsWorld, list[Machine], Path],
) -> None:
    aws, machines, work = world
    elb = boto3.client("elb", region_name=REGION, endpoint_url=aws.endpoint)
    elb.create_load_balancer(
        LoadBalancerName=ELB,
        Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 8080}],
        AvailabilityZones=[f"{REGION}a"],
    )
    balancer = ClassicLoadBalancer(elb, ELB)
    ok(aws, "service", "create", SERVICE, "--load-balancer", f"classic:{ELB}",
       "--drain-timeout", "60", "--health-timeout", "60", "--settle", "1",
       "--max-in-flight", "100%")  # fmt: skip
    revision = build_revision(
        SERVICE, "v1", UNITS, {"web.service": {"TOKEN": "t"}}, aws.secrets, aws.clock.now()
    )
    aws.store.put_revision(revision)
    processes: list[AgentProcess] = [start_scheduler(aws, work, "sched", interval=2)]
    try:
        for machine in machines:
            processes.append(
                start_agent(aws, work, SERVICE, machine.instance_id,
                            runtime=machine.runtime_options())
            )  # fmt: skip
        ok(aws, "weights", SERVICE, "v1=100")

        def runs(revision_id: str | None) -> bool:
            instances = aws.store.list_instances(SERVICE)
            deploys = aws.store.list_deploys(SERVICE)
            return (
                len(instances) == 2
                and all(i.current_revision == revision_id for i in instances)
                and all(d.finished for d in deploys)
            )

        wait_for(lambda: runs(revision.id), 120, "v1 running on both instances")
        for machine in machines:
            assert len(machine.active()) == 2
            assert balancer.state(machine.instance_id) is TargetState.HEALTHY

        said = ok(aws, "service", "delete", SERVICE)
        assert f"service {SERVICE} is being deleted" in said

        def gone() -> bool:
            try:
                aws.store.get_service(SERVICE)
            except NotFoundError:
                return True
            return False

        wait_for(gone, 120, "the service record deleted")
        assert runs(None)
        described = elb.describe_load_balancers(LoadBalancerNames=[ELB])
        assert described["LoadBalancerDescriptions"][0]["Instances"] == []
        for machine in machines:
            assert machine.runtime().owned_units() == []
            assert not list(machine.manager.unit_dir.glob("flotilla-*"))
            environment_dir = machine.state_dir / "env"
            assert not environment_dir.exists() or not list(environment_dir.glob("*.env"))
            assert balancer.state(machine.instance_id) is TargetState.UNUSED
            deploys = aws.store.list_instance_deploys(SERVICE, machine.instance_id)
            (unassignment,) = [d for d in deploys if d.to_revision is None]
            assert unassignment.outcome is Outcome.SUCCEEDED, unassignment.error
        assert "does not exist" in flotilla_cli(aws, "service", "show", SERVICE).stderr
        # The agents stay up (idle, not crash-looping) and stop cleanly.
        for agent in processes[1:]:
            assert agent.process.poll() is None, agent.log.read_text()[-2000:]
            assert agent.terminate() == 0
    finally:
        for process in processes:
            process.kill()
        for machine in machines:
            runtime = machine.runtime()
            runtime.remove(runtime.owned_units())
