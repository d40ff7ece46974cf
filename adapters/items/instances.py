"""Instances (membership, heartbeat, assignment) as stored items, and back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flotilla.adapters.items import common
from flotilla.adapters.items.common import Item
from flotilla.engine.errors import MisfiledItemError
from flotilla.engine.records import Instance, instance_key

INSTANCE_SCHEMA = 1


def instance_to_item(instance: Instance, *, expires_at: datetime) -> Item:
    return {
        "schema": INSTANCE_SCHEMA,
        "id": instance_key(instance.service, instance.id),
        "instance_id": instance.id,  # the by-instance index: EC2's word names the machine only
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
    if common.is_unscoped(item.get("id")):
        # Refused rather than read: its key cannot be written under the grants of this
        # version, so its agent could never renew it. That agent, restarted with this
        # version, registers its instance again under `<service>/<instance id>`; the old
        # item then ages out (its TTL).
        raise MisfiledItemError(
            f"stored instance item {item['id']!r} has the key shape of Flotilla before "
            "keys carried the service; it is ignored until its agent, upgraded, registers "
            f"it again as {instance_key(str(item.get('service')), str(item['id']))!r}"
        )
    common.check_key(
        "instance", item, instance_key(str(item.get("service")), str(item.get("instance_id")))
    )

    def build() -> Instance:
        registered = common.time(item["registered_ms"])
        heartbeat = common.time(item["heartbeat_ms"])
        if registered is None or heartbeat is None:
            raise ValueError("registered_ms or heartbeat_ms is empty")
        return Instance(
            id=str(item["instance_id"]),
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
