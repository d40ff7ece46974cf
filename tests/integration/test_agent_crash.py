"""The crash matrix: a real agent process is SIGKILLed in every state (before the step, and
after its effect but before its checkpoint), restarted, and must finish the deploy.

AWS is a moto server in its own process, so agents can die and come back against the
same state; units run on the process runtime (the systemd runtime has its own contract
suite on a real systemd user manager).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import boto3
import pytest

from flotilla.adapters.process_runtime import ProcessRuntime
from flotilla.adapters.sqs_events import SqsEventQueue
from flotilla.engine import units
from flotilla.engine.checkpoint import Outcome
from flotilla.engine.liveness import expiry_for
from flotilla.engine.records import Instance, Revision, Service
from flotilla.engine.revisions import build_revision
from tests.support.agents import AwsWorld, aws_world, start_agent, wait_for

pytestmark = pytest.mark.slow
SLEEPER = "[Service]\nExecStart=/bin/sleep 600\n"
_services = itertools.count(1)


@pytest.fixture(scope="module")
def world() -> Iterator[AwsWorld]:
    with aws_world(f"crash{os.getpid()}") as made:
        yield made


def add_revision(world: AwsWorld, service: str, label: str) -> Revision:
    revision = build_revision(
        service, label, {"app.service": SLEEPER}, {"app.service": {"TOKEN": "s3cr3t-" + label}},
        world.secrets, world.clock.now(),
    )  # fmt: skip
    return world.store.put_revision(revision)


def assign(world: AwsWorld, instance_id: str, revision: Revision) -> None:
    current = world.store.get_instance(revision.service, instance_id)
    world.store.set_assignment(
        revision.service, instance_id, revision.id, expected_version=current.assignment_version
    )


def runtime_of(work: Path, instance_id: str) -> ProcessRuntime:
    return ProcessRuntime(work / instance_id / "process")


def active_units(work: Path, instance_id: str) -> list[str]:
    runtime = runtime_of(work, instance_id)
    return [s.name for s in runtime.status(runtime.owned_units()) if s.active_state == "active"]


def prepare(world: AwsWorld, work: Path) -> tuple[str, str, Revision, Revision]:
    """A service whose instance runs v1, deployed by a real agent that then stopped."""
    service = f"crash-{next(_services)}"
    world.store.create_service(Service(service, settle_seconds=1))
    v1, v2 = add_revision(world, service, "v1"), add_revision(world, service, "v2")
    instance_id = f"i-{service}"
    now = world.clock.now()
    world.store.register_instance(
        Instance(instance_id, service, "test", now, now), expires_at=expiry_for(now)
    )
    assign(world, instance_id, v1)
    agent = start_agent(world, work, service, instance_id)
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


# The full matrix runs on systemd behind a load balancer (test_agent_crash_systemd.py);
# here a few states prove the process runtime (the demo's) resumes just the same.
CASES = [
    (state, point)
    for state in ("locking", "starting", "healthy")
    for point in ("before-step", "after-effect")
]


@pytest.mark.parametrize(("state", "point"), CASES, ids=[f"{s}-{p}" for s, p in CASES])
def test_an_agent_killed_anywhere_finishes_the_deploy_after_a_restart(
    world: AwsWorld, tmp_path: Path, state: str, point: str
) -> None:
    service, instance_id, _v1, v2 = prepare(world, tmp_path)
    try:
        assign(world, instance_id, v2)
        doomed = start_agent(world, tmp_path, service, instance_id, fault=f"{state}:{point}")
        assert doomed.process.wait(timeout=60) == -9, "the fault hook did not kill the agent"
        deploy = next(
            d
            for d in world.store.list_instance_deploys(service, instance_id)
            if d.to_revision == v2.id
        )
        assert not deploy.finished
        assert deploy.state == state  # the checkpoint still says where it died

        survivor = start_agent(world, tmp_path, service, instance_id)
        wait_for(lambda: world.store.get_deploy(deploy.id).finished, 90, "the resumed deploy")
        assert survivor.terminate() == 0

        done = world.store.get_deploy(deploy.id)
        assert done.outcome is Outcome.SUCCEEDED, done.error
        assert active_units(tmp_path, instance_id) == [units.installed_name("app.service", v2.id)]
        assert runtime_of(tmp_path, instance_id).owned_units() == [
            units.installed_name("app.service", v2.id)
        ]
        assert world.locks.holders(f"deploy/{service}") == []
        assert world.store.get_instance(service, instance_id).current_revision == v2.id
        if state != "pending":
            assert [t.state for t in done.history if t.resumed] == [state]
        spans = spans_of(tmp_path / "spans.jsonl", done.trace_parent)
        assert "resume" in spans or state == "pending"
        assert f"deploy.{state}" in spans
    finally:
        runtime = runtime_of(tmp_path, instance_id)
        runtime.stop(runtime.owned_units())


UNASSIGN_CASES = [
    (state, point)
    for state in ("stopping", "starting", "healthy")
    for point in ("before-step", "after-effect")
]


@pytest.mark.parametrize(
    ("state", "point"), UNASSIGN_CASES, ids=[f"{s}-{p}" for s, p in UNASSIGN_CASES]
)
def test_an_agent_killed_in_an_unassignment_removes_everything_after_a_restart(
    world: AwsWorld, tmp_path: Path, state: str, point: str
) -> None:
    """Issue 15 on the process runtime (the full matrix: test_agent_crash_unassign_systemd)."""
    service, instance_id, v1, _v2 = prepare(world, tmp_path)
    runtime = runtime_of(tmp_path, instance_id)
    try:
        current = world.store.get_instance(service, instance_id)
        world.store.set_assignment(
            service, instance_id, None, expected_version=current.assignment_version
        )
        doomed = start_agent(world, tmp_path, service, instance_id, fault=f"{state}:{point}")
        assert doomed.process.wait(timeout=60) == -9, "the fault hook did not kill the agent"
        (deploy,) = [
            d
            for d in world.store.list_instance_deploys(service, instance_id)
            if d.to_revision is None
        ]
        assert (deploy.state, deploy.from_revision) == (state, v1.id)

        survivor = start_agent(world, tmp_path, service, instance_id)
        wait_for(lambda: world.store.get_deploy(deploy.id).finished, 90, "the unassignment")
        assert survivor.terminate() == 0

        done = world.store.get_deploy(deploy.id)
        assert done.outcome is Outcome.SUCCEEDED, done.error
        assert runtime.owned_units() == []
        assert not list(runtime.files.environment_dir.glob("*.env"))
        assert world.store.get_instance(service, instance_id).current_revision is None
        assert [t.state for t in done.history if t.resumed] == [state]
        assert world.locks.holders(f"deploy/{service}") == []
    finally:
        runtime.stop(runtime.owned_units())


def events_of(world: AwsWorld, service: str) -> list[str]:
    """Kinds of the events agents sent about `service` (acknowledging them)."""
    queue = SqsEventQueue.for_environment(
        boto3.client("sqs", region_name="us-east-1", endpoint_url=world.endpoint), world.environment
    )
    kinds: list[str] = []
    while received := queue.receive(wait=timedelta(0), max_events=10):
        for event in received:
            if event.service == service:
                kinds.append(event.kind)
                queue.ack(event)
    return kinds


def spans_of(path: Path, traceparent: str | None) -> list[str]:
    """Names of the spans of one trace, from the agents' OTLP JSON file."""
    assert traceparent
    trace_id = traceparent.split("-")[1]
    names = []
    for line in path.read_text().splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                names += [s["name"] for s in scope["spans"] if s["traceId"] == trace_id]
    return names


def test_sigterm_finishes_the_step_and_exits_zero(world: AwsWorld, tmp_path: Path) -> None:
    service, instance_id, _v1, v2 = prepare(world, tmp_path)
    try:
        assign(world, instance_id, v2)
        agent = start_agent(world, tmp_path, service, instance_id)
        wait_for(
            lambda: any(
                d.to_revision == v2.id
                for d in world.store.list_instance_deploys(service, instance_id)
            ),
            30,
            "the deploy to start",
        )
        assert agent.terminate() == 0
        deploy = next(
            d
            for d in world.store.list_instance_deploys(service, instance_id)
            if d.to_revision == v2.id
        )
        last = deploy.history[-1]
        assert deploy.finished or last.ended_at is None  # it stopped between steps
        again = start_agent(world, tmp_path, service, instance_id)
        wait_for(lambda: world.store.get_deploy(deploy.id).finished, 60, "the deploy to finish")
        assert again.terminate() == 0
        assert world.store.get_deploy(deploy.id).outcome is Outcome.SUCCEEDED
        kinds = events_of(world, service)
        assert "instance_joined" in kinds
        assert kinds.count("deploy_finished") == 2  # v1, then v2 (reported once, when done)
    finally:
        runtime = runtime_of(tmp_path, instance_id)
        runtime.stop(runtime.owned_units())


def test_two_agents_for_one_instance_never_both_deploy(world: AwsWorld, tmp_path: Path) -> None:
    service, instance_id, _v1, v2 = prepare(world, tmp_path)
    try:
        assign(world, instance_id, v2)
        first = start_agent(world, tmp_path, service, instance_id)
        second = start_agent(world, tmp_path, service, instance_id)

        def deploys():
            return [
                d
                for d in world.store.list_instance_deploys(service, instance_id)
                if d.to_revision == v2.id
            ]

        wait_for(lambda: bool(deploys()) and deploys()[0].finished, 60, "the deploy")
        assert first.terminate() == 0
        assert second.terminate() == 0
        done = deploys()
        assert len(done) == 1
        assert done[0].outcome is Outcome.SUCCEEDED
        starts = [t for t in done[0].history if t.state == "starting"]
        assert len(starts) == 1  # one start, by one agent
        assert active_units(tmp_path, instance_id) == [units.installed_name("app.service", v2.id)]
        standby = [
            line
            for agent in (first, second)
            for line in agent.log_lines()
            if "standing by" in str(line.get("message", ""))
        ]
        assert standby, "one of the two agents should have stood by"
    finally:
        runtime = runtime_of(tmp_path, instance_id)
        runtime.stop(runtime.owned_units())
