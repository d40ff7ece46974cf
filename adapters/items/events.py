"""Events (what SQS carries between components) as JSON, and back."""

from __future__ import annotations

import json

from flotilla.adapters.items import common
from flotilla.engine.errors import SchemaError, ValidationError
from flotilla.engine.ports import Event

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


def event_from_json(text: str, receipt: str | None) -> Event:
    """A received message body as an event; `SchemaError` if it is not one we can read."""
    try:
        item = json.loads(text)
    except ValueError as exc:
        raise SchemaError(f"message is not a JSON event ({exc})") from exc
    if not isinstance(item, dict):
        raise SchemaError("message is not a JSON event object")
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
