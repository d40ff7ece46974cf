"""Instances (membership, heartbeat, assignment) as stored items, and back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flotilla.adapters.items import common
from flotilla.adapters.items.common import Item
from flotilla.engine.records import Instance

INSTANCE_SCHEMA = 1


def instance_to_item(instance: Instance, *, expires_at: datetime) -> Item:
    return {
        "schema": INSTANCE_SCHEMA,
        "id": instance.id,
        "service": instance.service,
        "agent_version": instance.agent_version,
        "registered_ms": common.ms(instance.registered_at),
        "heartbeat_ms": common.ms(instance.heartbeat_at),
        "expires_at_epoch": int(expires_at.timestamp()),
        "assigned_revision": instance.assigned_revision,
        "assignment_version": instance.assignment_version,
        "current_revision": instance.current_revision,
        "agent_owner": instance.agent_owner,
        "agent_lease_ms": common.ms(instance.agent_lease_until),
        "wake_address": instance.wake_address,
        "left_ms": common.ms(instance.left_at),
    }


def instance_from_item(item: Mapping[str, Any]) -> Instance:
    common.check_schema(item, "instance", INSTANCE_SCHEMA)

    def build() -> Instance:
        registered = common.time(item["registered_ms"])
        heartbeat = common.time(item["heartbeat_ms"])
        if registered is None or heartbeat is None:
            raise ValueError("registered_ms or heartbeat_ms is empty")
        return Instance(
            id=str(item["id"]),
            service=str(item["service"]),
            agent_version=str(item["agent_version"]),
            registered_at=registered,
            heartbeat_at=heartbeat,
            assigned_revision=common.optional_str(item.get("assigned_revision")),
            assignment_version=int(item.get("assignment_version", 0)),
            current_revision=common.optional_str(item.get("current_revision")),
            agent_owner=common.optional_str(item.get("agent_owner")),
            agent_lease_until=common.time(item.get("agent_lease_ms")),
            wake_address=common.optional_str(item.get("wake_address")),
            left_at=common.time(item.get("left_ms")),
        )

    return common.read("instance", item, build)
