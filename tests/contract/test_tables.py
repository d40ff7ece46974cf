"""The environment template is the one definition of the tables, and both paths honour it."""

from __future__ import annotations

from datetime import timedelta

import boto3
from moto import mock_aws

from flotilla.adapters.templates import create_tables, table_definitions
from flotilla.engine.clock import FakeClock
from flotilla.engine.config import TableNames
from flotilla.engine.liveness import is_alive, live_instances
from flotilla.engine.records import Instance
from tests.contract.conftest import Backend
from tests.support.aws import create_environment_stack, dynamodb_client

EXPECTED = {"services", "revisions", "instances", "deploys", "locks", "users"}


def test_the_template_defines_every_table_on_demand_with_ttl_where_items_expire() -> None:
    definitions = {d["TableName"]: d for d in table_definitions("prod")}
    assert set(definitions) == {f"flotilla-prod-{name}" for name in EXPECTED}
    assert {d["BillingMode"] for d in definitions.values()} == {"PAY_PER_REQUEST"}
    ttl = {
        name
        for name, d in definitions.items()
        if d.get("TimeToLiveSpecification", {}).get("Enabled")
    }
    assert ttl == {"flotilla-prod-instances", "flotilla-prod-locks"}
    assert set(vars(TableNames.for_environment("prod")).values()) == set(definitions)


def test_cloudformation_creates_the_tables_with_their_indexes() -> None:
    with mock_aws():
        create_environment_stack("stage")
        client = boto3.client("dynamodb", region_name="us-east-1")
        names = set(client.list_tables()["TableNames"])
        assert names == {f"flotilla-stage-{name}" for name in EXPECTED}
        deploys = client.describe_table(TableName="flotilla-stage-deploys")["Table"]
        assert {i["IndexName"] for i in deploys["GlobalSecondaryIndexes"]} == {
            "by-instance",
            "by-service",
        }


def test_dynamodb_local_gets_the_same_tables_with_ttl_enabled(dynamodb_local_endpoint: str) -> None:
    client = dynamodb_client(dynamodb_local_endpoint)
    create_tables(client, "ttlcheck")
    for table in ("instances", "locks"):
        ttl = client.describe_time_to_live(TableName=f"flotilla-ttlcheck-{table}")
        description = ttl["TimeToLiveDescription"]
        assert description["TimeToLiveStatus"] == "ENABLED"
        assert description["AttributeName"] == "expires_at_epoch"


def test_dead_instances_are_not_live_even_before_ttl_deletes_them(backend: Backend) -> None:
    clock: FakeClock = backend.clock
    ttl = timedelta(minutes=5)
    for instance_id in ("i-old", "i-new"):
        now = clock.now()
        backend.store.register_instance(
            Instance(instance_id, "api", "0.1.0", now, now), expires_at=now + 2 * ttl
        )
        clock.advance(240)
    # i-old beat 8 minutes ago, i-new 4 minutes ago; both items are still stored.
    assert [i.id for i in backend.store.list_instances("api")] == ["i-new", "i-old"]
    assert [i.id for i in live_instances(backend.store, "api", clock.now(), ttl)] == ["i-new"]
    old = backend.store.get_instance("api", "i-old")
    assert not is_alive(old, clock.now(), ttl)
