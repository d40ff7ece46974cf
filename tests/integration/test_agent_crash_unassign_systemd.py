"""Issue 15 on real parts (the crash matrix's world: real agent processes, a private
systemd user manager, a classic ELB and the store on a moto server):

- a revision that changes one of three units restarts only that one: the other two keep
  their main process (systemd's MainPID, read through the runtime);
- assigned no revision (every weight 0), the agent deregisters the instance, stops and
  removes every unit file and environment file, and records that it runs nothing;
- an agent SIGKILLed in every state of that unassignment (before the step, and after its
  effect but before its checkpoint) is restarted and converges to the same end.
"""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.liveness import expiry_for
from flotilla.engine.ports import TargetState
from flotilla.engine.records import (
    Instance,
    LoadBalancerKind,
    LoadBalancerRef,
    Revision,
    Service,
    deploy_id_for,
)
from flotilla.engine.revisions import build_revision
from flotilla.machines import deploy as machine
from tests.integration.test_agent_crash_systemd import (
    ELB,
    Fleet,
    assign,
    fleet,
    prepare,
    trace_spans,
)
from tests.support.agents import AwsWorld, start_agent, wait_for
from tests.support.aws import REGION

pytestmark = [pytest.mark.slow, pytest.mark.systemd]
__all__ = ["fleet"]  # the module's fixture, shared

SLEEP = "[Service]\nType=exec\nExecStart=/bin/sleep {seconds}\n"


def unassign(world: AwsWorld, service: str, instance_id: str) -> None:
    """What the scheduler writes when every weight of the service is 0."""
    current = world.store.get_instance(service, instance_id)
    world.store.set_assignment(
        service, instance_id, None, expected_version=current.assignment_version
    )


def deploys_to_none(world: AwsWorld, service: str, instance_id: str) -> list[DeployCheckpoint]:
    return [
        d for d in world.store.list_instance_deploys(service, instance_id) if d.to_revision is None
    ]


def assert_unassigned(fleet: Fleet, service: str, instance_id: str, done: DeployCheckpoint) -> None:
    world = fleet.world
    assert done.outcome is Outcome.SUCCEEDED, done.error
    assert fleet.runtime(instance_id).owned_units() == []
    assert not list(fleet.manager.unit_dir.glob("flotilla-*"))
    environment_dir = fleet.work / instance_id / "env"
    assert not list(environment_dir.glob("*.env")) if environment_dir.exists() else True
    assert world.store.get_instance(service, instance_id).current_revision is None
    assert fleet.balancer.state(instance_id) is TargetState.UNUSED
    elb = boto3.client("elb", region_name=REGION, endpoint_url=world.endpoint)
    described = elb.describe_load_balancers(LoadBalancerNames=[ELB])["LoadBalancerDescriptions"]
    assert instance_id not in {i["InstanceId"] for i in described[0]["Instances"]}
    assert world.locks.holders(f"deploy/{done.service}") == []
    skipped = {t.state: t.skip_reason for t in done.history if t.skipped}
    assert set(skipped) == {"starting", "registering"}


CASES = [
    (state, point) for state in machine.HAPPY_PATH[:-1] for point in ("before-step", "after-effect")
]


@pytest.mark.parametrize(("state", "point"), CASES, ids=[f"{s}-{p}" for s, p in CASES])
def test_a_killed_agent_finishes_the_unassignment_on_systemd(
    fleet: Fleet, state: str, point: str
) -> None:
    world = fleet.world
    service, instance_id, _v1, _v2 = prepare(fleet)
    try:
        unassign(world, service, instance_id)
        options = fleet.runtime_options()
        doomed = start_agent(
            world, fleet.work, service, instance_id, fault=f"{state}:{point}", runtime=options
        )
        assert doomed.process.wait(timeout=60) == -9, "the fault hook did not kill the agent"
        if state == machine.INITIAL_STATE:
            assert deploys_to_none(world, service, instance_id) == []  # created in `locking`
        else:
            (deploy,) = deploys_to_none(world, service, instance_id)
            assert (deploy.state, deploy.finished) == (state, False)

        survivor = start_agent(world, fleet.work, service, instance_id, runtime=options)
        wait_for(
            lambda: any(d.finished for d in deploys_to_none(world, service, instance_id)),
            90,
            "the resumed unassignment",
        )
        assert survivor.terminate() == 0
        (deploy,) = deploys_to_none(world, service, instance_id)
        done = world.store.get_deploy(deploy.id)
        assert done.id == deploy_id_for(world.store.get_instance(service, instance_id))
        assert_unassigned(fleet, service, instance_id, done)
        names = [s["name"] for s in trace_spans(fleet.work / "spans.jsonl", done.trace_parent)]
        if state != machine.INITIAL_STATE:
            assert [t.state for t in done.history if t.resumed] == [state]
            assert names.count("resume") == 1
        assert f"deploy.{state}" in names
    finally:
        fleet.clean(instance_id)


def three_units(world: AwsWorld, service: str, label: str, worker_seconds: int) -> Revision:
    units = {
        "web.service": SLEEP.format(seconds=600),
        "worker.service": SLEEP.format(seconds=worker_seconds),
        "cron.service": SLEEP.format(seconds=700),
    }
    environments = {"web.service": {"TOKEN": "kept"}}
    revision = build_revision(service, label, units, environments, world.secrets, world.clock.now())
    return world.store.put_revision(revision)


def main_pids(fleet: Fleet, instance_id: str) -> dict[str, int | None]:
    runtime = fleet.runtime(instance_id)
    return {
        status.name.removeprefix("flotilla-").rsplit("-", 1)[0]: status.main_pid
        for status in runtime.status(runtime.owned_units())
        if status.active_state == "active"
    }


def test_one_changed_unit_of_three_restarts_alone_then_weights_0_remove_them_all(
    fleet: Fleet, tmp_path: Path
) -> None:
    world = fleet.world
    service = "sd-three"
    world.store.create_service(
        Service(
            service,
            load_balancer=LoadBalancerRef(LoadBalancerKind.CLASSIC, ELB),
            drain_timeout_seconds=60,
            health_timeout_seconds=60,
            settle_seconds=1,
        )
    )
    v1 = three_units(world, service, "v1", 600)
    v2 = three_units(world, service, "v2", 601)
    instance_id = fleet.new_instance_id()
    now = world.clock.now()
    world.store.register_instance(
        Instance(instance_id, service, "test", now, now), expires_at=expiry_for(now)
    )
    options = fleet.runtime_options()
    agent = start_agent(world, fleet.work, service, instance_id, runtime=options)
    try:

        def runs(revision: str | None) -> bool:
            deploys = world.store.list_instance_deploys(service, instance_id)
            current = world.store.get_instance(service, instance_id).current_revision
            return bool(deploys) and all(d.finished for d in deploys) and current == revision

        assign(world, instance_id, v1)
        wait_for(lambda: runs(v1.id), 60, "v1 deployed")
        before = main_pids(fleet, instance_id)
        assert set(before) == {"web", "worker", "cron"}
        assert None not in before.values()

        assign(world, instance_id, v2)
        wait_for(lambda: runs(v2.id), 60, "v2 deployed")
        after = main_pids(fleet, instance_id)
        assert after["web"] == before["web"]
        assert after["cron"] == before["cron"]
        assert after["worker"] not in (None, before["worker"])
        (to_v2,) = [
            d
            for d in world.store.list_instance_deploys(service, instance_id)
            if d.to_revision == v2.id
        ]
        assert to_v2.units is not None
        assert to_v2.units.changed == ("worker.service",)
        assert fleet.balancer.state(instance_id) is TargetState.HEALTHY

        unassign(world, service, instance_id)
        wait_for(lambda: runs(None), 60, "the unassignment")
        (done,) = deploys_to_none(world, service, instance_id)
        assert_unassigned(fleet, service, instance_id, done)
    finally:
        agent.terminate()
        fleet.clean(instance_id)
