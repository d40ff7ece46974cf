"""Which instances are alive: a heartbeat younger than the TTL.

DynamoDB's TTL deletes expired instance items lazily (up to days later), so readers
never rely on it alone: they check the heartbeat explicitly.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flotilla.engine.ports import StateStore
from flotilla.engine.records import Instance

# An agent holds its instance for this long and renews the hold once a third of it has
# passed (engine/leases.py); that renewal is its heartbeat, every 3 minutes by default.
DEFAULT_AGENT_LEASE = timedelta(minutes=9)
DEFAULT_HEARTBEAT = DEFAULT_AGENT_LEASE / 3
# An instance silent for this long is dead to the scheduler: more than three heartbeats.
# Instances that are terminated leave sooner, through EC2's own notifications.
DEFAULT_INSTANCE_TTL = timedelta(minutes=10)


def is_alive(instance: Instance, now: datetime, ttl: timedelta = DEFAULT_INSTANCE_TTL) -> bool:
    """Heard from within the TTL, and not said by EC2 to have gone."""
    return instance.left_at is None and now - instance.heartbeat_at < ttl


def live_instances(
    store: StateStore, service: str, now: datetime, ttl: timedelta = DEFAULT_INSTANCE_TTL
) -> list[Instance]:
    return [i for i in store.list_instances(service) if is_alive(i, now, ttl)]


def expiry_for(heartbeat_at: datetime, ttl: timedelta = DEFAULT_INSTANCE_TTL) -> datetime:
    """When DynamoDB may delete the item: a while after it stops counting as alive."""
    return heartbeat_at + 2 * ttl
