"""The state store in memory: a real implementation for unit tests, simulations and the demo.

It keeps the same stored items as the DynamoDB store (through `adapters.items`), so a
record that does not survive a round-trip fails here too, and it applies the same
conditions under one lock. It passes the same contract suite as the DynamoDB store.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import threading
import zlib
from datetime import datetime
from typing import Any

from flotilla.adapters import items
from flotilla.adapters.memory_locks import MemoryLockService
from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.clock import Clock, to_epoch_ms
from flotilla.engine.errors import AlreadyExistsError, ConflictError, LockLostError, NotFoundError
from flotilla.engine.records import (
    AgentClaim,
    CurrentRevision,
    Instance,
    Lease,
    Revision,
    Service,
    instance_key,
)

Item = dict[str, Any]
log = logging.getLogger(__name__)


class MemoryStateStore:
    """`StateStore` held in dicts of stored items."""

    def __init__(self, clock: Clock, locks: MemoryLockService | None = None) -> None:
        self._clock = clock
        self._refusals = items.RefusalWarnings()
        # The lock service whose slots a checkpoint write may release (`update_deploy`),
        # as the DynamoDB store reaches its environment's locks table.
        self._locks = locks
        self._lock = threading.Lock()
        self._services: dict[str, Item] = {}
        self._revisions: dict[tuple[str, str], Item] = {}
        self._instances: dict[str, Item] = {}
        # The by-service index of the instances table: an instance never changes service.
        self._instances_by_service: dict[str, set[str]] = {}
        self._deploys: dict[str, Item] = {}

    def items(self) -> list[Item]:
        """A copy of every stored item (what a full scan of every table returns)."""
        with self._lock:
            tables = (self._services, self._revisions, self._instances, self._deploys)
            return [copy.deepcopy(item) for table in tables for item in table.values()]

    # --- services --------------------------------------------------------------------

    def create_service(self, service: Service) -> Service:
        now = self._clock.now()
        stored = dataclasses.replace(service, version=1, created_at=now, updated_at=now)
        with self._lock:
            if service.name in self._services:
                raise AlreadyExistsError(f"service {service.name!r} exists already")
            self._services[service.name] = items.service_to_item(stored)
        return stored

    def get_service(self, name: str) -> Service:
        with self._lock:
            item = self._services.get(name)
        if item is None:
            raise NotFoundError(f"service {name!r} does not exist")
        return items.service_from_item(copy.deepcopy(item))

    def list_services(self, *, segment: int = 0, segments: int = 1) -> list[Service]:
        with self._lock:
            found = [
                copy.deepcopy(item)
                for name, item in self._services.items()
                if _segment_of(name, segments) == segment
            ]
        return sorted((items.service_from_item(i) for i in found), key=lambda s: s.name)

    def update_service(self, service: Service) -> Service:
        stored = dataclasses.replace(
            service, version=service.version + 1, updated_at=self._clock.now()
        )
        with self._lock:
            self._check_service_version(service.name, service.version)
            self._services[service.name] = items.service_to_item(stored)
        return stored

    def delete_service(self, name: str, *, expected_version: int) -> None:
        with self._lock:
            self._check_service_version(name, expected_version)
            del self._services[name]

    def _check_service_version(self, name: str, expected: int) -> None:
        current = self._services.get(name)
        if current is None:
            raise NotFoundError(f"service {name!r} does not exist")
        if current["version"] != expected:
            record = items.service_from_item(copy.deepcopy(current))
            raise ConflictError(
                f"service {name!r} changed meanwhile (version {record.version}, expected "
                f"{expected}); re-read it and apply the change again",
                current=record,
            )

    # --- revisions -------------------------------------------------------------------

    def put_revision(self, revision: Revision) -> Revision:
        item = items.revision_to_item(revision)
        items.check_item_size(item, f"revision {revision.id[:12]} of {revision.service}")
        with self._lock:
            existing = self._revisions.setdefault((revision.service, revision.id), item)
        log.debug("stored %s", items.describe_revision(revision))
        return items.revision_from_item(copy.deepcopy(existing))

    def get_revision(self, service: str, revision_id: str) -> Revision:
        with self._lock:
            item = self._revisions.get((service, revision_id))
        if item is None:
            raise NotFoundError(f"revision {revision_id!r} of {service!r} does not exist")
        return items.revision_from_item(copy.deepcopy(item))

    def list_revisions(self, service: str) -> list[Revision]:
        with self._lock:
            found = [copy.deepcopy(i) for (s, _), i in self._revisions.items() if s == service]
        revisions = (items.revision_from_item(i) for i in found)
        return sorted(revisions, key=lambda r: (r.created_at, r.id))

    # --- instances -------------------------------------------------------------------

    def register_instance(
        self, instance: Instance, *, expires_at: datetime, claim: AgentClaim | None = None
    ) -> Instance:
        fresh = items.instance_to_item(instance, expires_at=expires_at)
        now_ms = to_epoch_ms(instance.heartbeat_at)
        key = fresh["id"]  # carries the service: another service's instance is another item
        with self._lock:
            current = self._instances.get(key)
            if (
                current is not None
                and claim is not None
                and _held_by_another(current, claim, now_ms)
            ):
                raise ConflictError(
                    f"instance {instance.id!r} is held by agent {current['agent_owner']!r}",
                    current=items.instance_from_item(copy.deepcopy(current)),
                )
            if current is None:
                fresh.update(
                    assigned_revision=None,
                    assignment_version=0,
                    current_revision=None,
                    agent_owner=None,
                    agent_lease_ms=None,
                    wake_address=None,
                    left_ms=None,
                )
                self._instances[key] = fresh
                self._instances_by_service.setdefault(instance.service, set()).add(key)
                current = fresh
            else:
                for field in ("agent_version", "heartbeat_ms", "expires_at_epoch", "schema"):
                    current[field] = fresh[field]
            if claim is not None:
                current["agent_owner"] = claim.owner
                current["agent_lease_ms"] = to_epoch_ms(claim.lease_until)
                current["left_ms"] = None  # an agent runs on it: it is back
                if claim.wake_address is not None:
                    current["wake_address"] = claim.wake_address
            stored = copy.deepcopy(current)
        return items.instance_from_item(stored)

    def record_heartbeat(
        self,
        service: str,
        instance_id: str,
        at: datetime,
        expires_at: datetime,
        *,
        claim: AgentClaim | None = None,
    ) -> None:
        with self._lock:
            current = self._instances.get(instance_key(service, instance_id))
            if current is None:
                raise NotFoundError(
                    f"instance {instance_id!r} is not registered (it may have expired); "
                    "the agent registers it again"
                )
            if claim is not None and current.get("agent_owner") != claim.owner:
                raise LockLostError(
                    f"instance {instance_id!r} is held by agent "
                    f"{current.get('agent_owner')!r} now, not {claim.owner!r}"
                )
            current["heartbeat_ms"] = to_epoch_ms(at)
            current["expires_at_epoch"] = int(expires_at.timestamp())
            if claim is not None:
                current["agent_lease_ms"] = to_epoch_ms(claim.lease_until)
                if claim.wake_address is not None:
                    current["wake_address"] = claim.wake_address

    def mark_instance_left(self, instance_id: str, at: datetime) -> Instance:
        with self._lock:
            found = [i for i in self._instances.values() if i["instance_id"] == instance_id]
            if not found:
                raise NotFoundError(f"instance {instance_id!r} does not exist")
            for current in found:
                current["left_ms"] = to_epoch_ms(at)
            latest = max(found, key=lambda item: item["registered_ms"])
            return items.instance_from_item(copy.deepcopy(latest))

    def release_instance(self, service: str, instance_id: str, owner: str) -> bool:
        with self._lock:
            current = self._instances.get(instance_key(service, instance_id))
            if current is None or current.get("agent_owner") != owner:
                return False
            current["agent_owner"] = None
            current["agent_lease_ms"] = None
            return True

    def set_assignment(
        self, service: str, instance_id: str, revision_id: str | None, *, expected_version: int
    ) -> Instance:
        with self._lock:
            current = self._instance_item(service, instance_id)
            if current["assignment_version"] != expected_version:
                record = items.instance_from_item(copy.deepcopy(current))
                raise ConflictError(
                    f"the assignment of {instance_id!r} changed meanwhile (version "
                    f"{record.assignment_version}, expected {expected_version})",
                    current=record,
                )
            current["assigned_revision"] = revision_id
            current["assignment_version"] = expected_version + 1
            stored = copy.deepcopy(current)
        return items.instance_from_item(stored)

    def set_current_revision(self, service: str, instance_id: str, revision_id: str | None) -> None:
        with self._lock:
            self._instance_item(service, instance_id)["current_revision"] = revision_id

    def _instance_item(self, service: str, instance_id: str) -> Item:
        current = self._instances.get(instance_key(service, instance_id))
        if current is None:
            raise NotFoundError(f"instance {instance_id!r} does not exist")
        return current

    # Reads decode the stored item into new records (no copy of it first: the codecs build
    # every field afresh), under the lock, since instance items are updated in place.

    def get_instance(self, service: str, instance_id: str, *, consistent: bool = True) -> Instance:
        with self._lock:
            return items.instance_from_item(self._instance_item(service, instance_id))

    def list_instances(self, service: str) -> list[Instance]:
        with self._lock:
            keys = self._instances_by_service.get(service, set())
            found = items.decode_listed(
                (self._instances[k] for k in keys), items.instance_from_item, self._refusals
            )
        return sorted(found, key=lambda i: i.id)

    def delete_instance(self, service: str, instance_id: str) -> None:
        key = instance_key(service, instance_id)
        with self._lock:
            removed = self._instances.pop(key, None)
            if removed is not None:
                self._instances_by_service[removed["service"]].discard(key)

    # --- deploys ---------------------------------------------------------------------

    def create_deploy(self, checkpoint: DeployCheckpoint) -> DeployCheckpoint:
        stored = dataclasses.replace(checkpoint, version=1)
        with self._lock:
            if checkpoint.id in self._deploys:
                raise AlreadyExistsError(f"deploy {checkpoint.id!r} exists already")
            self._deploys[checkpoint.id] = items.deploy_to_item(stored)
        return stored

    def get_deploy(self, deploy_id: str) -> DeployCheckpoint:
        with self._lock:
            item = self._deploys.get(deploy_id)
        if item is None:
            raise NotFoundError(f"deploy {deploy_id!r} does not exist")
        return items.deploy_from_item(item)  # a checkpoint's item is replaced, never changed

    def update_deploy(
        self,
        checkpoint: DeployCheckpoint,
        *,
        current: CurrentRevision | None = None,
        release: Lease | None = None,
    ) -> DeployCheckpoint:
        if release is not None and self._locks is None:
            raise ValueError("this memory store was made without the lock service to release")
        stored = dataclasses.replace(checkpoint, version=checkpoint.version + 1)
        item = items.deploy_to_item(stored)
        items.check_item_size(item, f"deploy {checkpoint.id!r}")
        with self._lock:
            instance = (
                None
                if current is None
                else self._instance_item(checkpoint.service, current.instance_id)
            )
            existing = self._deploys.get(checkpoint.id)
            if existing is None:
                raise NotFoundError(f"deploy {checkpoint.id!r} does not exist")
            if existing["version"] != checkpoint.version:
                record = items.deploy_from_item(copy.deepcopy(existing))
                raise ConflictError(
                    f"deploy {checkpoint.id!r} was advanced by another runner (version "
                    f"{record.version}, expected {checkpoint.version}); this runner stops",
                    current=record,
                )
            self._deploys[checkpoint.id] = item
            if instance is not None and current is not None:
                instance["current_revision"] = current.revision
            if release is not None and self._locks is not None:
                self._locks.release(release)  # False, and no change, if no longer held
        return stored

    def list_deploys(
        self, service: str, *, since: datetime | None = None, brief: bool = False
    ) -> list[DeployCheckpoint]:
        floor = None if since is None else to_epoch_ms(since)
        with self._lock:
            found = [
                i
                for i in self._deploys.values()
                if i["service"] == service and (floor is None or i["created_ms"] >= floor)
            ]
        if brief:  # what DynamoDB's projection returns
            found = [{k: v for k, v in i.items() if k in items.BRIEF_ATTRIBUTES} for i in found]
        decode = functools.partial(items.deploy_from_item, brief=brief)
        deploys = items.decode_listed(found, decode, self._refusals)
        return sorted(deploys, key=lambda d: (d.created_at, d.id))

    def list_instance_deploys(self, service: str, instance_id: str) -> list[DeployCheckpoint]:
        key = instance_key(service, instance_id)  # what the by-instance index holds
        with self._lock:
            found = [i for i in self._deploys.values() if i["instance_id"] == key]
        deploys = items.decode_listed(found, items.deploy_from_item, self._refusals)
        return sorted(deploys, key=lambda d: (d.created_at, d.id))


def _segment_of(name: str, segments: int) -> int:
    """A stable shard for a name, as DynamoDB's parallel scan spreads keys over segments."""
    return zlib.crc32(name.encode("utf-8")) % segments


def _held_by_another(item: Item, claim: AgentClaim, now_ms: int) -> bool:
    """Whether another agent's claim on the instance still runs (the one rule the DynamoDB
    store writes as its condition)."""
    owner = item.get("agent_owner")
    if owner is None or owner in (claim.owner, claim.replacing):
        return False
    return int(item.get("agent_lease_ms") or 0) > now_ms
