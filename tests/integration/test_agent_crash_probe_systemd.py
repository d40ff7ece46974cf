"""A real agent process SIGKILLed while it probes a service without a load balancer, on a
real systemd user manager against a moto server, and restarted: the deploy resumes in
`healthy`, probes again for a whole health period within the same stored health deadline,
and finishes. The service's unit is itself the HTTP server probed (Python's http.server on
loopback, its request log kept in a file), so what is probed is what the deploy started.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.ec2.models.amis import AMIS

from flotilla.adapters.systemd import SystemdRuntime
from flotilla.engine import units
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.liveness import expiry_for
from flotilla.engine.records import HealthCheck, HealthCheckProtocol, Instance, Service
from flotilla.engine.revisions import build_revision
from tests.support.agents import AwsWorld, aws_world, start_agent, wait_for
from tests.support.aws import REGION
from tests.support.probe_servers import closed_port
from tests.support.systemd_manager import PrivateSystemdManager

pytestmark = [pytest.mark.slow, pytest.mark.systemd]
PERIOD = 20  # seconds the probe must pass: the kill comes well inside it


@pytest.fixture
def world() -> Iterator[AwsWorld]:
    with aws_world(f"probe{os.getpid()}") as made:
        yield made


@pytest.fixture
def manager() -> Iterator[PrivateSystemdManager]:
    with PrivateSystemdManager() as made:
        yield made


def server_unit(port: int, root: Path, log: Path) -> str:
    (root / "health").write_text("ok\n")  # GET /health answers 200
    return (
        "[Service]\nType=exec\n"
        f"ExecStart={sys.executable} -m http.server {port} --bind 127.0.0.1 --directory {root}\n"
        f"StandardError=append:{log}\n"  # http.server logs each request there
    )


def probes(log: Path) -> int:
    return log.read_text().count('"GET /health') if log.exists() else 0


def test_an_agent_killed_while_probing_resumes_and_finishes(
    world: AwsWorld, manager: PrivateSystemdManager, tmp_path: Path
) -> None:
    port, log = closed_port(), tmp_path / "requests.log"
    (tmp_path / "site").mkdir()
    world.store.create_service(
        Service(
            "probed",
            health_check=HealthCheck(HealthCheckProtocol.HTTP, port, "/health"),
            health_period_seconds=PERIOD,
            health_timeout_seconds=180,
            settle_seconds=1,
        )
    )
    unit = server_unit(port, tmp_path / "site", log)
    revision = world.store.put_revision(
        build_revision("probed", "v1", {"web.service": unit}, {}, world.secrets, world.clock.now())
    )
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=world.endpoint)
    reservation = ec2.run_instances(
        ImageId=AMIS[0]["ami_id"], MinCount=1, MaxCount=1, InstanceType="t3.micro"
    )
    instance_id = str(reservation["Instances"][0]["InstanceId"])
    now = world.clock.now()
    world.store.register_instance(
        Instance(instance_id, "probed", "test", now, now), expires_at=expiry_for(now)
    )
    current = world.store.get_instance("probed", instance_id)
    world.store.set_assignment(
        "probed", instance_id, revision.id, expected_version=current.assignment_version
    )
    options = ["--runtime", "systemd", "--bus-address", manager.bus_address,
               "--unit-dir", str(manager.unit_dir)]  # fmt: skip

    def deploys() -> list[DeployCheckpoint]:
        return world.store.list_instance_deploys("probed", instance_id)

    doomed = start_agent(world, tmp_path, "probed", instance_id, runtime=options)
    try:
        wait_for(
            lambda: any(d.state == "healthy" for d in deploys()) and probes(log) >= 2,
            90,
            "the agent probing",
        )
    finally:
        doomed.kill()  # SIGKILL, in the middle of the health period
    (interrupted,) = deploys()
    assert interrupted.state == "healthy"
    assert not interrupted.finished
    before = probes(log)

    survivor = start_agent(world, tmp_path, "probed", instance_id, runtime=options)
    try:
        wait_for(lambda: all(d.finished for d in deploys()), 120, "the resumed deploy")
    finally:
        assert survivor.terminate() == 0
    (done,) = deploys()
    assert done.outcome is Outcome.SUCCEEDED, done.error
    assert done.deadlines["health"] == interrupted.deadlines["health"]
    assert [t.state for t in done.history if t.resumed] == ["healthy"]
    # Probed again for a whole period (about one probe a second), not only the rest of it.
    assert probes(log) - before >= PERIOD
    runtime = SystemdRuntime(
        bus_address=manager.bus_address,
        unit_dir=manager.unit_dir,
        environment_dir=tmp_path / instance_id / "env",
    )
    installed = units.installed_name("web.service", revision.id)
    assert [s.name for s in runtime.status([installed]) if s.active_state == "active"] == [
        installed
    ]
    runtime.stop([installed])
    runtime.remove([installed])
