"""The demo's embedded AWS (cli/demo/emulator.py) applies each DynamoDB request to an item
atomically, as DynamoDB does.

The demo's scheduler and agents write one instance item from several processes at once.
moto's threaded server resolves an update's `if_not_exists` before it writes, under no
lock, so an assignment written in between was overwritten by an agent's registration: the
instance's assignment went back a version and the demo reused a deploy id. Here moto's own
server runs in this process with that window widened to a fifth of a second, so the
interleaving happens every time unless the requests are serialized (`atomic_moto`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.dynamodb.parsing.validators import UpdateExpressionValidator
from moto.dynamodb.responses import DynamoHandler
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from flotilla.cli.demo import atomic_moto
from testbed.aws import free_port

KEY = {"k": {"S": "web/demo-1"}}
REGISTER = "SET version = if_not_exists(version, :zero), heartbeat = :now"
WINDOW = 0.2  # seconds between a registration resolving if_not_exists and writing it


@pytest.fixture
def widened_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A client of moto's server in this process, whose registration-shaped updates wait
    WINDOW seconds between reading the item and writing it (as a busy machine can)."""
    validates = UpdateExpressionValidator.validate

    def validate(self: UpdateExpressionValidator) -> Any:
        resolved = validates(self)  # if_not_exists(version, :zero) is a value from here on
        if ":zero" in self.expression_attribute_values:  # only the registration names it
            time.sleep(WINDOW)
        return resolved

    monkeypatch.setattr(UpdateExpressionValidator, "validate", validate)
    # Whatever atomic_moto does to moto's handler is undone after the test.
    monkeypatch.setattr(DynamoHandler, "call_action", DynamoHandler.call_action)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client(
        "dynamodb",
        region_name="eu-west-3",  # a region no other test of this process writes
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="demo",
        aws_secret_access_key="demo",
        config=Config(retries={"max_attempts": 1}),
    )
    client.create_table(
        TableName="instances",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        yield client
    finally:
        client.delete_table(TableName="instances")
        server.stop()


def _assignment_during_a_registration(client: Any) -> int:
    """Version 1 stored; an agent registers while the scheduler moves it to version 2.
    The stored version afterwards."""
    client.put_item(TableName="instances", Item={**KEY, "version": {"N": "1"}})
    registration = threading.Thread(
        target=client.update_item,
        kwargs={
            "TableName": "instances",
            "Key": KEY,
            "UpdateExpression": REGISTER,
            "ExpressionAttributeValues": {":zero": {"N": "0"}, ":now": {"S": "now"}},
        },
    )
    registration.start()
    time.sleep(WINDOW / 4)  # the registration has read version 1 and waits to write
    client.update_item(
        TableName="instances",
        Key=KEY,
        UpdateExpression="SET version = :next",
        ConditionExpression="version = :seen",
        ExpressionAttributeValues={":next": {"N": "2"}, ":seen": {"N": "1"}},
    )
    registration.join()
    item = client.get_item(TableName="instances", Key=KEY, ConsistentRead=True)["Item"]
    return int(item["version"]["N"])


def test_plain_moto_loses_an_assignment_written_during_a_registration(
    widened_moto: Any,
) -> None:
    """Why the emulator needs atomic_moto: this is the demo's lost assignment."""
    assert _assignment_during_a_registration(widened_moto) == 1


def test_the_emulator_applies_each_request_whole(widened_moto: Any) -> None:
    atomic_moto.serialize_dynamodb()
    assert _assignment_during_a_registration(widened_moto) == 2
