"""The events-topic contract, run against the in-memory topic and SNS (moto in-process,
an SQS queue subscribed with raw message delivery, as an operator would subscribe one).

What a subscriber receives is each published notice as the documented JSON (schema 1,
times ISO-8601 UTC) with the attributes `kind` and `service`; a notice reads back whole
(`notice_from_json`). On SNS a filter policy on `kind` keeps only the kinds asked for, and
SNS's refusals become engine errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from flotilla.adapters.items.notices import notice_from_json, notice_to_json
from flotilla.adapters.memory_topic import MemoryEventTopic
from flotilla.adapters.sns_topic import SnsEventTopic, message_attributes, topic_name
from flotilla.engine.errors import ConfigurationError, TransientError, ValidationError
from flotilla.engine.ports import EventTopic, Notice
from tests.support.aws import REGION

AT = datetime(2026, 12, 5, 14, 3, 7, 123000, tzinfo=UTC)

STARTED = Notice(
    id="api/rollout_started/1796479387123",
    kind="rollout_started",
    service="api",
    at=AT,
    reason="v1 100 -> 75, v2 0 -> 25; step 1 of 3",
    weights={"r1": 75, "r2": 25},
    labels={"r1": "v1", "r2": "v2"},
    step={"index": 1, "of": 3},
)
DEPLOYED = Notice(
    id="api/deploy/d-1/rolled_back",
    kind="deploy_rolled_back",
    service="api",
    at=AT + timedelta(seconds=42),
    reason="unit web.service failed to start",
    labels={"r1": "v1", "r2": "v2"},
    deploy={
        "id": "d-1",
        "instance": "i-1",
        "from_revision": "r1",
        "to_revision": "r2",
        "outcome": "rolled_back",
        "failed_in": "starting",
        "error": "unit web.service failed to start",
    },
)


@dataclass
class Received:
    body: str
    attributes: dict[str, str]


@dataclass
class Backend:
    kind: str
    topic: EventTopic
    received: Callable[[], list[Received]]  # what a subscriber got so far, in order


def _sqs_subscriber(sns: Any, sqs: Any, topic_arn: str, name: str, **attributes: str) -> str:
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true", **attributes},
    )
    return str(queue_url)


def _drain(sqs: Any, queue_url: str) -> list[Received]:
    found: list[Received] = []
    while True:
        answer = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        messages = answer.get("Messages") or []
        if not messages:
            return found
        for message in messages:
            attributes = {
                k: v["StringValue"] for k, v in (message.get("MessageAttributes") or {}).items()
            }
            found.append(Received(message["Body"], attributes))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture(params=["memory", "moto"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        memory = MemoryEventTopic()

        def memory_received() -> list[Received]:
            return [
                Received(
                    notice_to_json(n),
                    {k: v["StringValue"] for k, v in message_attributes(n).items()},
                )
                for n in memory.notices
            ]

        yield Backend("memory", memory, memory_received)
        return
    with mock_aws():
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        arn = sns.create_topic(Name=topic_name("contract"))["TopicArn"]
        queue_url = _sqs_subscriber(sns, sqs, arn, "subscriber")
        collected: list[Received] = []

        def moto_received() -> list[Received]:
            collected.extend(_drain(sqs, queue_url))
            return list(collected)

        yield Backend("moto", SnsEventTopic(sns, arn), moto_received)


def test_a_subscriber_receives_each_notice_as_documented_json(backend: Backend) -> None:
    backend.topic.publish(STARTED)
    [received] = backend.received()
    body = json.loads(received.body)
    assert body == {
        "schema": 1,
        "id": "api/rollout_started/1796479387123",
        "kind": "rollout_started",
        "service": "api",
        "at": "2026-12-05T14:03:07.123Z",
        "reason": "v1 100 -> 75, v2 0 -> 25; step 1 of 3",
        "weights": {"r1": 75, "r2": 25},
        "labels": {"r1": "v1", "r2": "v2"},
        "step": {"index": 1, "of": 3},
        "deploy": None,
    }
    assert received.attributes == {"kind": "rollout_started", "service": "api"}


def test_notices_arrive_whole_and_in_order(backend: Backend) -> None:
    backend.topic.publish(STARTED)
    backend.topic.publish(DEPLOYED)
    received = backend.received()
    assert [notice_from_json(r.body) for r in received] == [STARTED, DEPLOYED]
    assert [r.attributes["kind"] for r in received] == ["rollout_started", "deploy_rolled_back"]


def test_times_are_utc_whatever_zone_they_were_made_in(backend: Backend) -> None:
    elsewhere = AT.astimezone(timezone(timedelta(hours=-5)))
    backend.topic.publish(Notice("x/1", "rollout_complete", "api", elsewhere, "done"))
    [received] = backend.received()
    assert json.loads(received.body)["at"] == "2026-12-05T14:03:07.123Z"


def test_a_notice_that_is_not_json_is_refused(backend: Backend) -> None:
    odd = Notice("x/2", "deploy_failed", "api", AT, "", deploy={"error": float("nan")})
    with pytest.raises(ValidationError):
        backend.topic.publish(odd)
    assert backend.received() == []


# --- SNS alone --------------------------------------------------------------------------


@mock_aws
def test_on_sns_a_filter_policy_on_kind_keeps_only_those_kinds() -> None:
    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    arn = sns.create_topic(Name=topic_name("contract"))["TopicArn"]
    policy = json.dumps({"kind": ["rollout_failed", "deploy_rolled_back"]})
    queue_url = _sqs_subscriber(sns, sqs, arn, "failures", FilterPolicy=policy)
    topic = SnsEventTopic(sns, arn)
    topic.publish(STARTED)
    topic.publish(DEPLOYED)
    assert [json.loads(r.body)["id"] for r in _drain(sqs, queue_url)] == [DEPLOYED.id]


@mock_aws
def test_on_sns_a_missing_topic_is_a_configuration_error() -> None:
    sns = boto3.client("sns", region_name=REGION)
    arn = f"arn:aws:sns:{REGION}:123456789012:{topic_name('nowhere')}"
    with pytest.raises(ConfigurationError, match="does not exist"):
        SnsEventTopic(sns, arn).publish(STARTED)


class _Refusing:
    def __init__(self, code: str, status: int) -> None:
        self._error = ClientError(
            {
                "Error": {"Code": code, "Message": "scripted"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "Publish",
        )

    def publish(self, **request: Any) -> None:
        raise self._error


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("AuthorizationError", 403, ConfigurationError),
        ("Throttling", 400, TransientError),
        ("InternalError", 500, TransientError),
    ],
)
def test_sns_refusals_become_engine_errors(code: str, status: int, expected: type) -> None:
    topic = SnsEventTopic(_Refusing(code, status), "arn:aws:sns:eu-west-1:123456789012:t")
    with pytest.raises(expected) as raised:
        topic.publish(STARTED)
    assert type(raised.value) is expected


def test_the_memory_topic_fails_as_told() -> None:
    topic = MemoryEventTopic()
    topic.fail_with(TransientError("SNS is unreachable"))
    with pytest.raises(TransientError):
        topic.publish(STARTED)
    topic.fail_with(None)
    topic.publish(STARTED)
    assert topic.kinds() == ["rollout_started"]
