"""Every record survives the trip to a stored item and back, also through DynamoDB's codec."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from boto3.dynamodb.types import TypeSerializer
from hypothesis import given
from hypothesis import strategies as st

from flotilla.adapters import items
from flotilla.adapters.dynamodb_codec import from_attributes, to_attribute, to_attributes
from flotilla.adapters.items.common import check_schema
from flotilla.adapters.items.deploys import BRIEF_LEFT_OUT
from flotilla.engine.checkpoint import DeployCheckpoint, LeaseRef, Outcome, Transition
from flotilla.engine.errors import SchemaError
from flotilla.engine.ports import INSTANCE_LEFT, INSTANCE_STATE
from flotilla.engine.records import (
    FailureAction,
    GateResult,
    Instance,
    LoadBalancerKind,
    LoadBalancerRef,
    Promotion,
    Revision,
    RolloutPolicy,
    RolloutState,
    RolloutStep,
    SealedBlob,
    SealedEnvironment,
    Service,
    Wave,
    WavePlan,
    WaveStatus,
)
from flotilla.engine.validation import MAX_TIMEOUT_SECONDS

# Items keep whole milliseconds, so generated times do too.
moments = st.integers(min_value=0, max_value=4_000_000_000_000).map(
    lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
)
texts = st.text(max_size=30)
ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=64)
small = st.integers(min_value=0, max_value=10**9)

# Paces and step plans as validation lets them be stored (a malformed one is refused).
paces = st.sampled_from(["1", "2", "25%", "100%"])
step_plans = st.sampled_from(
    [
        (),
        (RolloutStep("100%", 60),),
        (RolloutStep("1", 300), RolloutStep(None), RolloutStep("100%")),
    ]
)
services = st.builds(
    Service,
    name=texts,
    load_balancer=st.none() | st.builds(LoadBalancerRef, st.sampled_from(LoadBalancerKind), texts),
    drain_timeout_seconds=small,
    health_timeout_seconds=small,
    settle_seconds=small,
    rollout=st.builds(
        RolloutPolicy,
        paces,
        small,
        st.sampled_from(FailureAction),
        step_plans,
        st.lists(texts, max_size=3).map(tuple),
        st.lists(texts, max_size=2).map(tuple),
        st.integers(min_value=0, max_value=MAX_TIMEOUT_SECONDS),  # checked at write and read
        st.none() | paces,
    ),
    promotion=st.none() | st.builds(Promotion, small, st.booleans(), moments, texts),
    deleting_since=st.none() | moments,
    rollout_state=st.builds(
        RolloutState,
        step=small,
        step_since=st.none() | moments,
        baking_since=st.none() | moments,
        gate=st.none() | st.builds(GateResult, small, st.booleans(), moments, st.none() | texts),
        skip_step=st.none() | small,
        promoted=small,
        fast=st.booleans(),
        resumed_at=st.none() | moments,
        announced_until=st.none() | moments,
    ),
    weights=st.dictionaries(ids, small, max_size=5),
    paused=st.booleans(),
    version=small,
    created_at=st.none() | moments,
    updated_at=st.none() | moments,
)
sealed = st.builds(
    SealedEnvironment,
    key_id=texts,
    encrypted_data_key=st.binary(min_size=1, max_size=64),
    blobs=st.dictionaries(
        texts,
        st.builds(SealedBlob, st.binary(min_size=1, max_size=12), st.binary(min_size=1)),
        max_size=3,
    ),
    variable_names=st.dictionaries(texts, st.lists(texts, max_size=4).map(tuple), max_size=3),
)
revisions = st.builds(
    Revision,
    service=texts,
    id=ids,
    label=texts,
    units=st.dictionaries(texts, st.text(max_size=200), max_size=4),
    environment=st.none() | sealed,
    created_at=moments,
)
instances = st.builds(
    Instance,
    id=texts,
    service=texts,
    agent_version=texts,
    registered_at=moments,
    heartbeat_at=moments,
    assigned_revision=st.none() | ids,
    assignment_version=small,
    current_revision=st.none() | ids,
    agent_owner=st.none() | texts,
    agent_lease_until=st.none() | moments,
    wake_address=st.none() | texts,
    left_at=st.none() | moments,
)
transitions = st.builds(
    Transition,
    state=texts,
    started_at=moments,
    ended_at=st.none() | moments,
    attempt=small,
    error=st.none() | texts,
    skipped=st.booleans(),
    resumed=st.booleans(),
    span_id=st.none() | ids,
)
any_checkpoints = st.builds(
    DeployCheckpoint,
    id=texts,
    service=texts,
    instance_id=texts,
    from_revision=st.none() | ids,
    to_revision=ids,
    state=texts,
    machine_version=small,
    created_at=moments,
    updated_at=moments,
    version=small,
    deadlines=st.dictionaries(texts, moments, max_size=4),
    attempts=st.dictionaries(texts, small, max_size=4),
    lease=st.none() | st.builds(LeaseRef, texts, small, texts, small),
    trace_parent=st.none() | texts,
    last_span_id=st.none() | ids,
    outcome=st.none() | st.sampled_from(Outcome),
    error=st.none() | texts,
    rollback_error=st.none() | texts,
    history=st.lists(transitions, max_size=5).map(tuple),
)


def _keyed(
    checkpoint: DeployCheckpoint, service: str, instance: str, n: int, scoped: bool
) -> DeployCheckpoint:
    """Ids as stored: `<service>/<instance>.<n>`, or `<instance>.<n>` as stored before keys
    carried the service (adapters/items refuses an id not made of the checkpoint's own)."""
    deploy_id = f"{service}/{instance}.{n}" if scoped else f"{instance}.{n}"
    return dataclasses.replace(checkpoint, id=deploy_id, service=service, instance_id=instance)


checkpoints = st.builds(
    _keyed,
    any_checkpoints,
    st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True),
    st.from_regex(r"i-[0-9a-f]{1,17}", fullmatch=True),
    small,
    st.booleans(),
)


def through_dynamodb(item: dict[str, Any]) -> dict[str, Any]:
    return from_attributes(to_attributes(item))


@given(services)
def test_services_round_trip(service: Service) -> None:
    item = items.service_to_item(service)
    assert items.service_from_item(item) == service
    assert items.service_from_item(through_dynamodb(item)) == service


@given(revisions)
def test_revisions_round_trip(revision: Revision) -> None:
    item = items.revision_to_item(revision)
    assert items.revision_from_item(item) == revision
    assert items.revision_from_item(through_dynamodb(item)) == revision


@given(instances, moments)
def test_instances_round_trip(instance: Instance, expires_at: datetime) -> None:
    item = items.instance_to_item(instance, expires_at=expires_at)
    assert item["expires_at_epoch"] == int(expires_at.timestamp())
    assert items.instance_from_item(item) == instance
    assert items.instance_from_item(through_dynamodb(item)) == instance


@given(checkpoints)
def test_checkpoints_round_trip(checkpoint: DeployCheckpoint) -> None:
    item = items.deploy_to_item(checkpoint)
    assert items.deploy_from_item(item) == checkpoint
    assert items.deploy_from_item(through_dynamodb(item)) == checkpoint


@given(checkpoints)
def test_a_brief_item_names_every_attribute_but_those_left_out(
    checkpoint: DeployCheckpoint,
) -> None:
    """An attribute added to the deploy item is either in brief listings or left out on
    purpose: the scheduler's listings never lose one silently."""
    written = set(items.deploy_to_item(checkpoint))
    assert written <= set(items.BRIEF_ATTRIBUTES) | BRIEF_LEFT_OUT  # none unaccounted for
    assert set(items.BRIEF_ATTRIBUTES) <= written  # and brief names only real ones
    assert BRIEF_LEFT_OUT.isdisjoint(items.BRIEF_ATTRIBUTES)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=20,
    )
)
def test_item_size_is_at_least_the_payload(value: Any) -> None:
    size = items.item_size(value)
    assert size >= 0
    if isinstance(value, str | bytes):
        assert size == len(value.encode() if isinstance(value, str) else value)


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**40), max_value=10**40)
        | st.text()
        | st.binary(),
        lambda children: (
            st.lists(children)
            | st.tuples(children, children)
            | st.dictionaries(st.text(), children)
        ),
        max_leaves=20,
    )
)
def test_attributes_are_written_as_boto3_writes_them(value: Any) -> None:
    """The codec's own serializer (the common types written out) says what boto3's says,
    and refuses what it refuses (integers DynamoDB would round)."""
    try:
        expected = TypeSerializer().serialize(value)
    except (TypeError, ArithmeticError) as refused:
        with pytest.raises(type(refused)):
            to_attribute(value)
        return
    assert to_attribute(value) == expected


def test_a_float_is_refused_as_boto3_refuses_it() -> None:
    with pytest.raises(TypeError, match="Float types are not supported"):
        to_attribute({"weight": [0.5]})


def ec2_notification(state: str, instance_id: str = "i-0abc") -> str:
    """What EventBridge puts on the events queue for the environment stack's rule."""
    return json.dumps(
        {
            "version": "0",
            "id": "7bf73129-1428-4cd3-a780-95db273d1602",
            "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2",
            "account": "123456789012",
            "time": "2026-12-05T12:00:00Z",
            "region": "eu-west-1",
            "resources": [f"arn:aws:ec2:eu-west-1:123456789012:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, "state": state},
        }
    )


def test_ec2_saying_a_machine_goes_is_an_instance_left_event_without_a_service() -> None:
    for state in ("shutting-down", "terminated", "stopping", "stopped"):
        event = items.event_from_json(ec2_notification(state), "r-1")
        assert (event.kind, event.service, event.receipt) == (INSTANCE_LEFT, "", "r-1")
        assert event.detail == {"instance_id": "i-0abc", "state": state}
    running = items.event_from_json(ec2_notification("running"), None)
    assert running.kind == INSTANCE_STATE


def test_an_ec2_notification_without_its_instance_is_a_schema_error() -> None:
    broken = json.loads(ec2_notification("terminated"))
    del broken["detail"]["instance-id"]
    with pytest.raises(SchemaError, match="instance-id"):
        items.event_from_json(json.dumps(broken), None)


def test_only_what_needs_a_newer_schema_is_written_in_it() -> None:
    """An older flotilla (schema 4) keeps reading every other service, and refuses one
    being deleted (schema 5) or of several regions (schema 6) instead of writing it back
    without its mark (cancelling the deletion) or its regions and waves."""
    plain = items.service_to_item(Service("api"))
    marked = items.service_to_item(Service("api", deleting_since=datetime(2026, 1, 2, tzinfo=UTC)))
    regional = items.service_to_item(Service("api", regions=("eu-west-1", "us-east-1")))
    schemas = (plain["schema"], marked["schema"], regional["schema"])
    assert schemas == (4, 5, items.SERVICE_SCHEMA) == (4, 5, 6)
    assert items.service_from_item(marked).deleting_since == datetime(2026, 1, 2, tzinfo=UTC)
    assert items.service_from_item(regional).regions == ("eu-west-1", "us-east-1")
    for older_reader, readable in ((4, [plain]), (5, [plain, marked])):
        for item in (plain, marked, regional):
            if item in readable:
                check_schema(item, "service", older_reader)
            else:
                with pytest.raises(SchemaError, match="newer than this flotilla understands"):
                    check_schema(item, "service", older_reader)


def test_a_wave_plan_reads_back_as_it_was_written() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    plan = WavePlan(
        number=3,
        waves=(
            Wave("eu-west-1", {"a" * 64: 100, "b" * 64: 0}, {"b" * 64: 100}, at, at, True),
            Wave("us-east-1", {"c" * 64: 100}),
        ),
        bake_seconds=600,
        failure_action=FailureAction.HOLD,
        status=WaveStatus.STOPPED,
        started_at=at,
        by="ops",
        reason="us-east-1: the rollout of api stopped",
        stop_all=True,
    )
    service = Service("api", regions=("eu-west-1", "us-east-1"), waves=plan)
    assert items.service_from_item(items.service_to_item(service)) == service
    assert plan.current == 1
    assert plan.finished


def test_a_misfiled_item_in_a_listing_is_left_out_and_warned_about_now_and_then(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A planted item stays until someone deletes it and a scheduler lists its service
    every few seconds: one warning an hour per store, not one at every listing."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    mine = Instance("i-1", "api", "1.0", now, now)
    planted = items.instance_to_item(dataclasses.replace(mine, id="i-666"), expires_at=now)
    planted["id"] = "billing/i-666"  # its key claims another service than its fields
    listing = [items.instance_to_item(mine, expires_at=now), planted]
    seconds = [0.0]
    warnings = items.RefusalWarnings(clock=lambda: seconds[0])

    def warned_for(elapsed: float) -> list[str]:
        seconds[0] = elapsed
        caplog.clear()
        with caplog.at_level("WARNING"):
            listed = items.decode_listed(listing, items.instance_from_item, warnings)
        assert [i.id for i in listed] == ["i-1"]
        return [r.getMessage() for r in caplog.records]

    [first] = warned_for(0)
    assert "billing/i-666" in first
    assert warned_for(5) == []
    assert warned_for(items.RefusalWarnings.REPEAT_AFTER - 1) == []
    assert warned_for(items.RefusalWarnings.REPEAT_AFTER) == [first]
