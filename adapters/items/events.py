"""Events (what SQS carries between components) as JSON, and back."""

from __future__ import annotations

import json

from flotilla.adapters.items import common
from flotilla.engine.errors import SchemaError, ValidationError
from flotilla.engine.ports import INSTANCE_LEFT, INSTANCE_STATE, Event

EVENT_SCHEMA = 1

# SQS accepts message bodies up to 256 KB; events are wake-ups and stay far smaller.
MAX_EVENT_BYTES = 64 * 1024


def event_to_json(event: Event) -> str:
    """An event as a message body: JSON with a schema number; `detail` must be JSON."""
    body = {
        "schema": EVENT_SCHEMA,
        "kind": event.kind,
        "service": event.service,
        "detail": dict(event.detail),
    }
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"event {event.kind!r} of {event.service!r} has a detail that is not JSON ({exc})"
        ) from exc
    if len(text.encode("utf-8")) > MAX_EVENT_BYTES:
        raise ValidationError(
            f"event {event.kind!r} of {event.service!r} is over {MAX_EVENT_BYTES // 1024} KB; "
            "events are wake-ups: carry ids, not data"
        )
    return text


# What EventBridge delivers when an EC2 instance leaves (the environment stack's rule
# sends these to the events queue): its instance left its service, whatever the service.
EC2_STATE_CHANGE = "EC2 Instance State-change Notification"
LEAVING_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})


def event_from_json(text: str, receipt: str | None) -> Event:
    """A received message body as an event; `SchemaError` if it is not one we can read.

    Besides Flotilla's own events, EC2's state-change notifications (through EventBridge)
    read as `instance_left` events with no service: the scheduler looks the instance up.
    """
    try:
        item = json.loads(text)
    except ValueError as exc:
        raise SchemaError(f"message is not a JSON event ({exc})") from exc
    if not isinstance(item, dict):
        raise SchemaError("message is not a JSON event object")
    if item.get("detail-type") == EC2_STATE_CHANGE and item.get("source") == "aws.ec2":
        return _instance_left(item, receipt)
    common.check_schema(item, "event", EVENT_SCHEMA)

    def build() -> Event:
        detail = item.get("detail") or {}
        if not isinstance(detail, dict):
            raise TypeError("detail is not an object")
        kind, service = item["kind"], item["service"]
        if not isinstance(kind, str) or not isinstance(service, str):
            raise TypeError("kind and service must be strings")
        return Event(kind=kind, service=service, detail=detail, receipt=receipt)

    return common.read("event", item, build)


def _instance_left(item: dict[str, object], receipt: str | None) -> Event:
    detail = item.get("detail")
    if not isinstance(detail, dict):
        raise SchemaError("an EC2 state-change notification without its detail")
    instance_id, state = detail.get("instance-id"), detail.get("state")
    if not isinstance(instance_id, str) or not isinstance(state, str):
        raise SchemaError("an EC2 state-change notification without instance-id and state")
    return Event(
        kind=INSTANCE_LEFT if state in LEAVING_STATES else INSTANCE_STATE,
        service="",
        detail={"instance_id": instance_id, "state": state},
        receipt=receipt,
    )
