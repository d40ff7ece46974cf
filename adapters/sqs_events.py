"""The event queue on SQS: wake-ups for the scheduler, sent by agents and the CLI.

A standard queue (at-least-once, unordered) named `flotilla-<env>-events`, created by the
environment stack with a dead-letter queue. Receiving long-polls (up to SQS's 20 s, and
never longer than the client's read timeout allows) and hides the received messages for
the visibility timeout; a receiver acknowledges (deletes) an event only once it has
handled it, so a receiver that dies before that leaves the event to reappear for the next
one. Messages that cannot be read are left alone: SQS moves them to the dead-letter queue
after `maxReceiveCount` receives. botocore's errors become engine errors at the one AWS
error edge (`adapters.aws_errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

from flotilla.adapters import aws_errors, items
from flotilla.engine.errors import SchemaError, TransientError, ValidationError
from flotilla.engine.ports import Event
from flotilla.engine.validation import environment_name

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 20  # SQS's longest long poll
MAX_BATCH = 10  # SQS returns, and deletes, at most ten messages a call

SERVICE = "SQS"
_MISSING_QUEUE = (
    "the events queue does not exist; create the environment first with `flotilla init`, "
    "or check --env and --region"
)


def queue_name(environment: str) -> str:
    """The events queue of an environment, as cfn_templates/environment.yaml names it."""
    return f"flotilla-{environment_name(environment)}-events"


class SqsEventQueue:
    """`EventQueue` on one SQS queue."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        *,
        visibility_timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        self._client = client
        self._url = queue_url
        self._visibility = max(0, round(visibility_timeout.total_seconds()))
        # A long poll must end before the client gives up reading the answer.
        read_timeout = getattr(client.meta.config, "read_timeout", 60) or 60
        self._max_wait = max(0, min(MAX_WAIT_SECONDS, int(read_timeout) - 2))

    @classmethod
    def for_environment(
        cls,
        client: Any,
        environment: str,
        *,
        visibility_timeout: timedelta = timedelta(seconds=30),
    ) -> SqsEventQueue:
        name = queue_name(environment)
        with translated_errors(f"finding the events queue {name}"):
            url = str(client.get_queue_url(QueueName=name)["QueueUrl"])
        return cls(client, url, visibility_timeout=visibility_timeout)

    def send(self, event: Event) -> None:
        body = items.event_to_json(event)
        with translated_errors(f"sending a {event.kind} event of {event.service!r}"):
            self._client.send_message(
                QueueUrl=self._url,
                MessageBody=body,
                # Attributes let operators filter and inspect without parsing bodies.
                MessageAttributes={
                    "kind": {"DataType": "String", "StringValue": event.kind},
                    "service": {"DataType": "String", "StringValue": event.service},
                },
            )

    def receive(self, *, wait: timedelta, max_events: int = 10) -> list[Event]:
        # Whole seconds, rounded down: a poll never outlasts what the caller can afford.
        seconds = max(0, min(self._max_wait, int(wait.total_seconds())))
        with translated_errors("receiving events"):
            response = self._client.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=max(1, min(MAX_BATCH, max_events)),
                WaitTimeSeconds=seconds,
                VisibilityTimeout=self._visibility,
                MessageAttributeNames=["All"],
            )
        events = []
        for message in response.get("Messages", []):
            try:
                events.append(items.event_from_json(message["Body"], message["ReceiptHandle"]))
            except SchemaError as unreadable:
                log.warning(
                    "leaving unreadable message %s for the dead-letter queue: %s",
                    message.get("MessageId"),
                    unreadable.message,
                )
        return events

    def ack(self, *events: Event) -> None:
        for event in events:
            _check_received(event)  # every one before any is deleted
        for start in range(0, len(events), MAX_BATCH):
            batch = events[start : start + MAX_BATCH]
            what = f"acknowledging {_events_words(batch)}"
            with translated_errors(what):
                answer = self._client.delete_message_batch(
                    QueueUrl=self._url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": event.receipt}
                        for n, event in enumerate(batch)
                    ],
                )
            failed = answer.get("Failed") or []
            if failed:
                first = failed[0]
                raise TransientError(
                    f"{what}: SQS refused {len(failed)} of {len(batch)} "
                    f"({first.get('Code')}: {first.get('Message')}); they come back and are "
                    "handled again"
                )


def _check_received(event: Event) -> None:
    if event.receipt is None:
        raise ValidationError(
            f"event {event.kind!r} of {event.service!r} was not received from a queue; "
            "only received events can be acknowledged"
        )


def _events_words(events: Sequence[Event]) -> str:
    if len(events) == 1:
        return f"a {events[0].kind} event of {events[0].service!r}"
    return f"{len(events)} events"


def translated_errors(what: str) -> AbstractContextManager[None]:
    """botocore's failures of `what` as engine errors, by the one AWS error edge."""
    missing = dict.fromkeys(
        ("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"), _MISSING_QUEUE
    )
    return aws_errors.translated_errors(SERVICE, what, missing=missing)
