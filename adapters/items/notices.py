"""Events for other systems (`Notice`) as JSON: the message body published to the
environment's SNS topic. docs/events.md documents this schema for subscribers; a change
that removes or retypes a field raises `NOTICE_SCHEMA` (adding a field does not).

    {
      "schema": 1,
      "id": "api/step_reached/1764943387123",   same for every delivery of one event
      "kind": "step_reached",                    rollout_started, ..., deploy_succeeded
      "service": "api",
      "at": "2026-12-05T14:03:07.123Z",          ISO-8601, UTC, milliseconds
      "reason": "step 2 of 3: 50% ...",
      "weights": {"<revision id>": 50, ...},     in force after the event
      "labels": {"<revision id>": "v2", ...},
      "step": {"index": 2, "of": 3} | null,      1-based
      "deploy": {"id", "instance", "from_revision", "to_revision", "outcome",
                 "failed_in", "error"} | null
    }
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flotilla.engine.errors import SchemaError, ValidationError
from flotilla.engine.ports import Notice

NOTICE_SCHEMA = 1
# SNS takes messages up to 256 KB; a notice is a few hundred bytes (reasons are capped).
MAX_NOTICE_BYTES = 64 * 1024


def iso_utc(moment: datetime) -> str:
    """`2026-12-05T14:03:07.123Z`: ISO-8601 in UTC, to the millisecond."""
    if moment.tzinfo is None:
        raise ValidationError(f"a notice's time {moment!r} has no time zone")
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def notice_to_dict(notice: Notice) -> dict[str, Any]:
    return {
        "schema": NOTICE_SCHEMA,
        "id": notice.id,
        "kind": notice.kind,
        "service": notice.service,
        "at": iso_utc(notice.at),
        "reason": notice.reason,
        "weights": {str(k): int(v) for k, v in notice.weights.items()},
        "labels": {str(k): str(v) for k, v in notice.labels.items()},
        "step": None if notice.step is None else {k: int(v) for k, v in notice.step.items()},
        "deploy": None if notice.deploy is None else _plain(notice.deploy),
    }


def notice_to_json(notice: Notice) -> str:
    """A notice as the message body other systems receive (the module's doc)."""
    try:
        text = json.dumps(notice_to_dict(notice), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"notice {notice.id!r} is not JSON ({exc})") from exc
    if len(text.encode("utf-8")) > MAX_NOTICE_BYTES:
        raise ValidationError(f"notice {notice.id!r} is over {MAX_NOTICE_BYTES // 1024} KB")
    return text


def notice_from_json(text: str) -> Notice:
    """A received message body as a notice (for tests, the demo and Python subscribers);
    `SchemaError` for one this Flotilla cannot read."""
    try:
        item = json.loads(text)
        if not isinstance(item, dict):
            raise TypeError("not an object")
        schema = item.get("schema")
        if not isinstance(schema, int) or schema > NOTICE_SCHEMA:
            raise SchemaError(
                f"notice with schema {schema!r}: this Flotilla reads up to {NOTICE_SCHEMA}"
            )
        at = datetime.fromisoformat(item["at"].replace("Z", "+00:00"))
        return Notice(
            id=str(item["id"]),
            kind=str(item["kind"]),
            service=str(item["service"]),
            at=at,
            reason=str(item["reason"]),
            weights=dict(item.get("weights") or {}),
            labels=dict(item.get("labels") or {}),
            step=item.get("step"),
            deploy=item.get("deploy"),
        )
    except SchemaError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SchemaError(f"message is not a Flotilla notice ({exc})") from exc


def _plain(value: Any) -> Any:
    """JSON's own types; a time as ISO-8601 UTC."""
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
