"""The event queue contract, run against the in-memory queue and SQS (moto, in-process).

At-least-once: a received event stays invisible to other receivers for the visibility
timeout, reappears unless acknowledged, and is gone for good once acknowledged. The SQS
queue is the one the environment stack creates (through moto's CloudFormation), so the
template's queue and its dead-letter queue are exercised too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import boto3
import pytest
from moto import mock_aws

from flotilla.adapters.memory_events import MemoryEventQueue
from flotilla.adapters.sqs_events import SqsEventQueue, queue_name
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import ConfigurationError, ValidationError
from flotilla.engine.ports import Event, EventQueue
from tests.support.aws import REGION, create_environment_stack

VISIBILITY = timedelta(seconds=1)
NO_WAIT = timedelta(0)


@dataclass
class QueueBackend:
    kind: str
    queue: EventQueue
    pass_time: Callable[[float], None]  # let visibility timeouts run out
    make_receiver: Callable[[], EventQueue]  # a second process's view of the same queue


@pytest.fixture(params=["memory", "moto"])
def events(request: pytest.FixtureRequest) -> Iterator[QueueBackend]:
    if request.param == "memory":
        clock = FakeClock()
        queue = MemoryEventQueue(clock, visibility_timeout=VISIBILITY)
        yield QueueBackend("memory", queue, clock.advance, lambda: queue)
        return
    with mock_aws():
        create_environment_stack("events")
        client = boto3.client("sqs", region_name=REGION)

        def make() -> EventQueue:
            return SqsEventQueue.for_environment(client, "events", visibility_timeout=VISIBILITY)

        yield QueueBackend("moto", make(), time.sleep, make)


def an_event(n: int = 1, kind: str = "deploy_failed") -> Event:
    return Event(kind, "api", {"deploy_id": f"i-{n}.1", "attempt": n, "tags": ["a", "b"]})


def received(queue: EventQueue, expected: int) -> list[Event]:
    """Receive until `expected` events came (SQS may answer a batch in parts)."""
    found: list[Event] = []
    for _ in range(20):
        found += queue.receive(wait=NO_WAIT, max_events=10)
        if len(found) >= expected:
            break
    return found


def test_a_sent_event_is_received_with_its_detail_and_a_receipt(events: QueueBackend) -> None:
    events.queue.send(an_event())
    [got] = received(events.queue, 1)
    assert (got.kind, got.service, dict(got.detail)) == (
        "deploy_failed",
        "api",
        {"deploy_id": "i-1.1", "attempt": 1, "tags": ["a", "b"]},
    )
    assert got.receipt


def test_an_empty_queue_answers_nothing_after_the_wait(events: QueueBackend) -> None:
    assert events.queue.receive(wait=timedelta(seconds=1), max_events=10) == []


def test_a_received_event_is_hidden_from_other_receivers_until_its_timeout(
    events: QueueBackend,
) -> None:
    events.queue.send(an_event())
    assert len(received(events.queue, 1)) == 1
    other = events.make_receiver()
    assert other.receive(wait=NO_WAIT) == []
    events.pass_time(VISIBILITY.total_seconds() + 0.5)
    [again] = received(other, 1)
    assert again.detail["deploy_id"] == "i-1.1"


def test_an_acknowledged_event_never_comes_back(events: QueueBackend) -> None:
    events.queue.send(an_event())
    [got] = received(events.queue, 1)
    events.queue.ack(got)
    events.pass_time(VISIBILITY.total_seconds() + 0.5)
    assert events.queue.receive(wait=NO_WAIT) == []
    events.queue.ack(got)  # acknowledging twice is harmless


def test_every_event_is_delivered_and_at_most_max_events_at_once(events: QueueBackend) -> None:
    for n in range(12):
        events.queue.send(an_event(n))
    first = events.queue.receive(wait=NO_WAIT, max_events=3)
    assert 1 <= len(first) <= 3
    rest = received(events.queue, 12 - len(first))
    seen = sorted(e.detail["attempt"] for e in first + rest)
    assert seen == list(range(12))
    for event in first + rest:
        events.queue.ack(event)
    events.pass_time(VISIBILITY.total_seconds() + 0.5)
    assert events.queue.receive(wait=NO_WAIT) == []


def test_events_acknowledged_together_never_come_back(events: QueueBackend) -> None:
    for n in range(13):  # more than SQS deletes in one call
        events.queue.send(an_event(n))
    got = received(events.queue, 13)
    events.queue.ack(got[0])
    events.queue.ack(*got)  # one of them acknowledged already: harmless
    events.pass_time(VISIBILITY.total_seconds() + 0.5)
    assert events.queue.receive(wait=NO_WAIT) == []


def test_a_batch_holding_an_event_never_received_is_refused_whole(events: QueueBackend) -> None:
    events.queue.send(an_event())
    [got] = received(events.queue, 1)
    with pytest.raises(ValidationError, match="only received events"):
        events.queue.ack(got, an_event())
    events.pass_time(VISIBILITY.total_seconds() + 0.5)
    [again] = received(events.queue, 1)  # not acknowledged: delivered again
    assert again.detail == got.detail


def test_an_unacknowledged_event_is_delivered_again_with_a_new_receipt(
    events: QueueBackend,
) -> None:
    events.queue.send(an_event())
    [first] = received(events.queue, 1)
    events.pass_time(VISIBILITY.total_seconds() + 0.5)
    [second] = received(events.queue, 1)
    assert second.receipt != first.receipt
    events.queue.ack(second)
    events.pass_time(VISIBILITY.total_seconds() + 0.5)
    assert events.queue.receive(wait=NO_WAIT) == []


def test_only_received_events_can_be_acknowledged(events: QueueBackend) -> None:
    with pytest.raises(ValidationError, match="only received events"):
        events.queue.ack(an_event())


def test_an_event_whose_detail_is_not_json_is_refused_unsent(events: QueueBackend) -> None:
    with pytest.raises(ValidationError, match="not JSON"):
        events.queue.send(Event("deploy_failed", "api", {"when": object()}))
    assert events.queue.receive(wait=NO_WAIT) == []


# --- SQS only ----------------------------------------------------------------------------


def test_the_stack_gives_the_events_queue_a_dead_letter_queue() -> None:
    with mock_aws():
        create_environment_stack("dlq")
        client = boto3.client("sqs", region_name=REGION)
        url = client.get_queue_url(QueueName=queue_name("dlq"))["QueueUrl"]
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        policy = attributes["Attributes"]["RedrivePolicy"]
        assert "flotilla-dlq-events-dead" in policy
        assert '"maxReceiveCount": 10' in policy or '"maxReceiveCount":10' in policy


def test_a_missing_queue_is_a_configuration_error_naming_init() -> None:
    with mock_aws():
        client = boto3.client("sqs", region_name=REGION)
        with pytest.raises(ConfigurationError, match="flotilla init"):
            SqsEventQueue.for_environment(client, "nowhere")


def test_unreadable_messages_are_left_for_the_dead_letter_queue() -> None:
    with mock_aws():
        create_environment_stack("junk")
        client = boto3.client("sqs", region_name=REGION)
        queue = SqsEventQueue.for_environment(client, "junk", visibility_timeout=VISIBILITY)
        url = client.get_queue_url(QueueName=queue_name("junk"))["QueueUrl"]
        client.send_message(QueueUrl=url, MessageBody="not json")
        client.send_message(QueueUrl=url, MessageBody='{"schema": 99, "kind": "x"}')
        queue.send(an_event())
        got = received(queue, 1)
        assert [e.kind for e in got] == ["deploy_failed"]
