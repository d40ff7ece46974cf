"""Every record survives the trip to a stored item and back, also through DynamoDB's codec."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flotilla.adapters import items
from flotilla.adapters.dynamodb_codec import from_attributes, to_attributes
from flotilla.engine.checkpoint import DeployCheckpoint, LeaseRef, Outcome, Transition
from flotilla.engine.records import (
    Instance,
    LoadBalancerKind,
    LoadBalancerRef,
    Revision,
    RolloutPolicy,
    SealedBlob,
    SealedEnvironment,
    Service,
)

# Items keep whole milliseconds, so generated times do too.
moments = st.integers(min_value=0, max_value=4_000_000_000_000).map(
    lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
)
texts = st.text(max_size=30)
ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=64)
small = st.integers(min_value=0, max_value=10**9)

services = st.builds(
    Service,
    name=texts,
    load_balancer=st.none() | st.builds(LoadBalancerRef, st.sampled_from(LoadBalancerKind), texts),
    drain_timeout_seconds=small,
    health_timeout_seconds=small,
    settle_seconds=small,
    rollout=st.builds(RolloutPolicy, texts, small, st.booleans()),
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
checkpoints = st.builds(
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
