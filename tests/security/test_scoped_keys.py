"""A worker of one service cannot change another service's instances, holds, assignments or
deploy checkpoints.

moto does not evaluate IAM conditions, so what is shown here, and how:

1. Every DynamoDB request the agent of an `api` instance makes through registration, a
   whole deploy (its checkpoints, the deploy lock, the current revision written with the
   last checkpoint) and its release is recorded on moto and judged against the template's
   worker policies by the rules AWS documents for `ForAllValues:StringLike` on
   `dynamodb:LeadingKeys` (tests/support/iam_grants.py): each is allowed to `api`'s
   workers and to no other service's, including services whose names begin with `api`.
2. The statements' patterns, checked for every pair of service names drawn (hypothesis),
   against every key shape a service's items have (built by the code that builds them).
3. What another service's worker CAN still write: items under keys of its own service whose
   fields name `api`. Each such write is first shown to be within that worker's grants,
   then harmless: no phantom instance joins `api`, no forged failed deploy counts against
   `api`'s rollout, no forged hold or assignment reaches `api`'s agent.

Not proven here: IAM's own evaluation (this judge implements the documented rules for the
two operators the statements use, nothing else). tests/security/test_policy_simulator.py
judges the same recorded requests, and a table of hand-picked ones against this judge,
with a maintained evaluator, @cloud-copilot/iam-simulate: a second, independent model of
IAM, still not AWS itself. Nor anything within one service: IAM cannot confine a worker to
its own instance's keys (cfn_templates/service.yaml says why), so a compromised worker can
write its own service's other instances' items; what an agent adopts is checked
(tests/security/test_adoption.py), but it can deploy only that service's revisions.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.adapters import items
from flotilla.adapters.dynamodb_codec import to_attributes
from flotilla.engine import validation
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome, Transition
from flotilla.engine.errors import ValidationError
from flotilla.engine.liveness import expiry_for
from flotilla.engine.records import Instance, RolloutStatus, deploy_id_for, instance_key
from flotilla.engine.updates import set_weights
from flotilla.machines import deploy as machine
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from tests.support.iam_grants import Request, allowed, like
from tests.support.recorded_deploy import (
    OTHERS,
    World,
    record_an_agents_deploy,
    recording_world,
    run_agent,
    worker_policy,
)
from tests.support.scheduler_world import V1, V2, FakeAgents, make_service, register
from tests.unit.test_worker_policy import ENV, table


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with recording_world(tmp_path) as made:
        yield made


def test_every_request_of_an_agents_deploy_is_granted_to_its_service_only(world: World) -> None:
    requests = record_an_agents_deploy(world)
    keyed = {r for r in requests if r.leading_keys}
    # The writes that matter: the instance (hold, heartbeat, current revision), the
    # checkpoints, the deploy lock; and the resume query through the by-instance index.
    assert {(r.action, r.resource.rsplit("/", 1)[-1]) for r in keyed} >= {
        ("dynamodb:UpdateItem", f"flotilla-{ENV}-instances"),
        ("dynamodb:PutItem", f"flotilla-{ENV}-deploys"),
        ("dynamodb:UpdateItem", f"flotilla-{ENV}-locks"),
        ("dynamodb:Query", "by-instance"),
    }
    own = worker_policy("api")
    assert [r for r in requests if not allowed(own, r)] == []
    for other in OTHERS:
        reached = [r for r in keyed if allowed(worker_policy(other), r)]
        assert reached == [], f"a worker of {other!r} could make {reached}"


def test_an_agent_never_writes_its_instances_assignment(world: World) -> None:
    """The assignment (`assigned_revision`, `assignment_version`) is the scheduler's alone:
    none of the agent's writes to its instance item names it, registration included (it
    once wrote `assignment_version = if_not_exists(...)`, a read-modify-write that lost an
    assignment made meanwhile on an emulator without per-item atomicity)."""
    writes: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        updates = [params] + [
            action["Update"] for action in params.get("TransactItems", []) if "Update" in action
        ]
        if world.recorder.recording:
            writes.extend(u for u in updates if u.get("TableName", "").endswith("-instances"))

    for operation in ("UpdateItem", "TransactWriteItems"):  # the last checkpoint's is one
        world.client.meta.events.register(f"provide-client-params.dynamodb.{operation}", record)
    record_an_agents_deploy(world)
    assert len(writes) >= 3  # registration, the current revision, the release
    named = {
        word.strip(",()")
        for params in writes
        for part in (
            params["UpdateExpression"],
            *params.get("ExpressionAttributeNames", {}).values(),
        )
        for word in part.split()
    }
    assert "current_revision" in named
    assert not named & {"assigned_revision", "assignment_version"}, named


service_names = st.from_regex(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?", fullmatch=True)
instance_ids = st.from_regex(r"i-[0-9a-f]{8,17}", fullmatch=True)


def _keys_of(service: str, instance_id: str, version: int) -> dict[str, str]:
    instance = Instance(instance_id, service, "x", datetime.now(UTC), datetime.now(UTC))
    deploy = deploy_id_for(dataclasses.replace(instance, assignment_version=version))
    return {
        "instances": instance_key(service, instance_id),
        "deploys": deploy,
        "deploys/index/by-instance": items.deploy_to_item(_checkpoint(deploy, service))[
            "instance_id"
        ],
        "locks": f"deploy/{service}",
    }


def _checkpoint(deploy_id: str, service: str) -> DeployCheckpoint:
    now = datetime.now(UTC)
    return DeployCheckpoint(
        id=deploy_id,
        service=service,
        instance_id=deploy_id.split("/", 1)[1].rsplit(".", 1)[0],
        from_revision=None,
        to_revision=V1,
        state=machine.INITIAL_STATE,
        machine_version=machine.MACHINE_VERSION,
        created_at=now,
        updated_at=now,
    )


ACTIONS = {
    "instances": "dynamodb:UpdateItem",
    "deploys": "dynamodb:PutItem",
    "deploys/index/by-instance": "dynamodb:Query",
    "locks": "dynamodb:UpdateItem",
}


# Each example resolves the template for a service: no deadline, what is tested is not speed
# (under load an example took longer than hypothesis's default 200 ms).
@settings(deadline=None)
@given(service_names, service_names, instance_ids, st.integers(0, 10**6))
def test_a_services_grants_reach_its_own_keys_and_no_other_services(
    mine: str, theirs: str, instance_id: str, version: int
) -> None:
    for name in (mine, theirs):
        try:
            validation.service_name(name)
        except ValidationError:
            return
    policy = worker_policy(mine)
    for place, key in _keys_of(theirs, instance_id, version).items():
        request = Request(ACTIONS[place], table(place), (key,))
        assert allowed(policy, request) == (mine == theirs), (place, key)


def test_the_judge_follows_iams_string_like() -> None:
    """So that the judgements above mean something."""
    assert like("api/i-*", "api/i-0abc")
    assert like("api/i-*.*", "api/i-0abc.12")
    assert not like("api/i-*", "api2/i-0abc")
    assert not like("api/i-*", "API/i-0abc")  # case-sensitive
    assert like("a?c", "abc")
    assert not like("a?c", "ac")
    assert like("a[b]", "a[b]")
    assert not like("a[b]", "ab")  # no character classes
    request = Request("dynamodb:Scan", table("instances"), ())
    document = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "dynamodb:Scan",
                "Resource": table("instances"),
                "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["x/*"]}},
            }
        ]
    }
    assert allowed(document, request)  # ForAllValues over no key passes: never grant a Scan


# --- what another service's worker can write, and what comes of it --------------------


def plant(world: World, table_name: str, item: dict[str, Any], by: str) -> None:
    """A raw write by a worker of `by`, after checking its grants reach that key."""
    key = item["id"]
    action = "dynamodb:UpdateItem" if table_name == "instances" else "dynamodb:PutItem"
    assert allowed(worker_policy(by), Request(action, table(table_name), (key,)))
    assert not allowed(worker_policy("api"), Request(action, table(table_name), (key,)))
    world.client.put_item(TableName=f"flotilla-{ENV}-{table_name}", Item=to_attributes(item))


def a_forged_instance(world: World, instance_id: str, **fields: Any) -> dict[str, Any]:
    now = world.cluster.clock.now()
    instance = Instance(instance_id, "billing", "evil", now, now)
    return items.instance_to_item(instance, expires_at=expiry_for(now)) | fields


def test_a_phantom_instance_and_a_forged_failed_deploy_leave_the_rollout_alone(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    store, clock = world.cluster.store, world.cluster.clock
    store.delete_service("api", expected_version=store.get_service("api").version)
    make_service(store, weights={V1: 100}, max_in_flight="100%")
    register(store, clock, "api", 2)
    agents = FakeAgents(store, clock, "api")
    passes = SchedulerPass(store, clock, PassSettings(), guard=lambda: 1)
    for _ in range(4):
        passes.run()
        agents.settle()
        clock.advance(1)
    set_weights(store, "api", {V1: 0, V2: 100})

    # A worker of billing: an instance of its own key claiming to be api's (so that api
    # would wait for it), and failed deploys of its own keys claiming api's rollout.
    phantom = a_forged_instance(world, "i-666", service="api")
    plant(world, "instances", phantom, by="billing")
    for n in range(5):
        now = clock.now()
        forged = DeployCheckpoint(
            id=f"billing/i-66{n}.1",
            service="api",
            instance_id=f"i-66{n}",
            from_revision=V1,
            to_revision=V2,
            state=machine.State.FAILED,
            machine_version=machine.MACHINE_VERSION,
            created_at=now,
            updated_at=now,
            outcome=Outcome.FAILED,
            history=(Transition(machine.INITIAL_STATE, now),),
        )
        item = items.deploy_to_item(forged) | {"instance_id": f"billing/i-66{n}"}
        plant(world, "deploys", item, by="billing")

    with caplog.at_level(logging.WARNING):
        for _ in range(12):
            passes.run()
            agents.settle()
            clock.advance(1)
    service = store.get_service("api")
    assert service.rollout_state.status is RolloutStatus.COMPLETE
    assert not any(entry.kind == "reverted" for entry in service.history)
    assert {i.current_revision for i in store.list_instances("api")} == {V2}
    assert [i.id for i in store.list_instances("api")] == ["i-000", "i-001"]
    refused = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
    assert any("stored instance item 'billing/i-666' claims service 'api'" in m for m in refused)
    assert any("stored deploy item 'billing/i-660.1' claims service 'api'" in m for m in refused)
    # The phantom was never assigned anything: the scheduler never wrote to it.
    raw = world.client.get_item(
        TableName=f"flotilla-{ENV}-instances", Key=to_attributes({"id": "billing/i-666"})
    )
    assert "assigned_revision" not in raw["Item"] or raw["Item"]["assigned_revision"] == {
        "NULL": True
    }


def test_a_forged_hold_or_assignment_never_reaches_the_agent(world: World) -> None:
    """billing's worker writes its own key for api's machine, naming api, with a hold of
    its own and an assignment: api's agent reads and writes only `api/i-1`."""
    cluster = world.cluster
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    forged = a_forged_instance(
        world,
        "i-1",
        service="api",
        agent_owner="evil",
        agent_lease_ms=10**15,
        assigned_revision="f" * 64,
        assignment_version=99,
    )
    plant(world, "instances", forged, by="billing")
    run_agent(cluster, iterations=30)
    mine = cluster.store.get_instance("api", "i-1")
    assert (mine.current_revision, mine.assignment_version) == (v1.id, 1)
    assert mine.agent_owner is None  # released by its own agent on the way out
    assert [d.to_revision for d in cluster.store.list_instance_deploys("api", "i-1")] == [v1.id]
