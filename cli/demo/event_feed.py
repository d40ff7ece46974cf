"""What other systems hear during the demo: an SQS queue subscribed to the environment's
events topic, as an operator would subscribe one (raw message delivery, a queue policy
that lets only this topic send), read between the story's steps and printed a line per
event. Delivery is at least once, so repeats are dropped by the event's `id`
(docs/events.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from flotilla.adapters.items.notices import notice_from_json
from flotilla.engine.errors import SchemaError
from flotilla.engine.ports import Notice

QUEUE = "flotilla-demo-subscriber"


class EventFeed:
    """The demo's subscriber: `open` subscribes it, `show` prints what has arrived."""

    def __init__(
        self, sns: Any, sqs: Any, topic_arn: Callable[[], str], say: Callable[[str], None]
    ) -> None:
        self._sns = sns
        self._sqs = sqs
        self._topic_arn = topic_arn
        self._say = say
        self._queue_url: str | None = None
        self._seen: set[str] = set()
        self._labels: dict[str, str] = {}  # every revision's label seen so far
        self.kinds: list[str] = []  # what was printed, in order

    def open(self) -> str:
        """Subscribe a new queue to the topic; returns the topic's ARN."""
        topic = self._topic_arn()
        url = self._sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        queue_arn = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic}},
                }
            ],
        }
        self._sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
        self._sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        self._queue_url = url
        return topic

    def show(self) -> int:
        """Print each event that arrived since the last call; returns how many."""
        if self._queue_url is None:
            return 0
        shown = 0
        while True:
            answer = self._sqs.receive_message(
                QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = answer.get("Messages") or []
            if not messages:
                return shown
            # In time order; events of one moment as they came (as they were published).
            for notice in sorted(_read(messages), key=lambda n: n.at):
                if notice.id in self._seen:
                    continue  # a repeat (at-least-once delivery)
                self._seen.add(notice.id)
                self._labels.update(notice.labels)
                self.kinds.append(notice.kind)
                self._say(f"    [event] {describe(notice, self._labels)}")
                shown += 1
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                    for n, m in enumerate(messages)
                ],
            )


def _read(messages: list[dict[str, Any]]) -> list[Notice]:
    found = []
    for message in messages:
        try:
            found.append(notice_from_json(message["Body"]))
        except SchemaError:
            continue  # not ours to print
    return found


def describe(notice: Notice, labels: Mapping[str, str] | None = None) -> str:
    """One short line: kind, service, and what happened (revisions by their labels)."""
    known = {**(labels or {}), **notice.labels}
    if notice.deploy is not None:
        deploy = notice.deploy
        moved = " -> ".join(
            known.get(r, r[:12]) if r else "-"
            for r in (deploy.get("from_revision"), deploy.get("to_revision"))
        )
        why = f": {_short(notice.reason, known, 90)}" if notice.reason else ""
        return f"{notice.kind} {notice.service} {deploy.get('instance')} {moved}{why}"
    return f"{notice.kind} {notice.service}: {_short(notice.reason, known, 130)}"


def _short(reason: str, labels: Mapping[str, str], most: int) -> str:
    """Reasons name revisions by id; the demo's reader knows them by label."""
    for revision, label in labels.items():
        reason = reason.replace(revision, label).replace(revision[:12], label)
    return reason if len(reason) <= most else reason[: most - 3].rstrip() + "..."
