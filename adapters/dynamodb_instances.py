"""The instances table of the DynamoDB state store: registration with an agent's hold,
heartbeats, EC2's word that a machine went, assignments and current revisions.

Instance fields are updated one owner at a time (the agent its hold and heartbeat, the
scheduler the assignment, on `assignment_version`), never by whole-item puts, so a
heartbeat cannot undo an assignment. A mixin of `DynamoDBStateStore`, which provides the
client, the table names and the clock.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from flotilla.adapters import items
from flotilla.adapters.dynamodb_codec import (
    conditional_write,
    from_attributes,
    is_condition_failure,
    item_from_condition_failure,
    paginate,
    read_item,
    to_attribute,
    to_attributes,
    translated_errors,
)
from flotilla.engine.clock import Clock, to_epoch_ms
from flotilla.engine.config import TableNames
from flotilla.engine.errors import (
    ConflictError,
    LockLostError,
    MisfiledItemError,
    NotFoundError,
)
from flotilla.engine.records import AgentClaim, Instance, instance_key

log = logging.getLogger(__name__)


def _assignment_is(version: int) -> str:
    """The condition that the instance exists and its assignment is `version`: a registered
    instance has no `assignment_version` until its first assignment (registering never
    writes it)."""
    if version == 0:
        return (
            "attribute_exists(id) AND"
            " (attribute_not_exists(assignment_version) OR assignment_version = :expected)"
        )
    return "assignment_version = :expected"


def _key(service: str, instance_id: str) -> dict[str, Any]:
    return to_attributes({"id": instance_key(service, instance_id)})


class InstanceItems:
    """The instance half of `StateStore` on DynamoDB."""

    _client: Any
    _tables: TableNames
    _clock: Clock
    _refusals: items.RefusalWarnings

    def register_instance(
        self, instance: Instance, *, expires_at: datetime, claim: AgentClaim | None = None
    ) -> Instance:
        """Create the instance, or refresh agent version and heartbeat of an existing one;
        with a claim, take it for that agent process in the same write."""
        item = items.instance_to_item(instance, expires_at=expires_at)
        values = {
            ":instance": item["instance_id"],
            ":service": item["service"],
            ":agent": item["agent_version"],
            ":registered": item["registered_ms"],
            ":heartbeat": item["heartbeat_ms"],
            ":expires": item["expires_at_epoch"],
            ":schema": item["schema"],
        }
        sets = [
            "instance_id = :instance",
            "#service = :service",
            "agent_version = :agent",
            "heartbeat_ms = :heartbeat",
            "expires_at_epoch = :expires",
            "#schema = :schema",
            "registered_ms = if_not_exists(registered_ms, :registered)",
        ]
        # Never the assignment's attributes: they are the scheduler's alone, and an item
        # without them is read as assignment 0 of no revision (adapters/items/instances.py).
        removes: list[str] = []
        # The key carries the service, so an instance of another service is another item.
        condition: str | None = None
        if claim is not None:
            sets += ["agent_owner = :owner", "agent_lease_ms = :lease"]
            removes.append("left_ms")  # an agent runs on it: it is back
            # Free, ours, run out, or held by a predecessor proven dead.
            condition = (
                "attribute_not_exists(agent_owner) OR agent_owner IN (:owner, :replacing)"
                " OR agent_lease_ms <= :heartbeat"
            )
            values |= {
                ":owner": claim.owner,
                ":lease": to_epoch_ms(claim.lease_until),
                ":replacing": claim.replacing or claim.owner,
            }
            if claim.wake_address is not None:
                sets.append("wake_address = :wake")
                values[":wake"] = claim.wake_address
        update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")

        def refused(current: dict[str, Any] | None) -> Exception:
            record = None if current is None else items.instance_from_item(current)
            owner = None if record is None else record.agent_owner
            return ConflictError(f"instance {instance.id!r} is held by agent {owner!r}", record)

        with translated_errors(f"registering instance {instance.id!r}"):
            try:
                response = self._client.update_item(
                    TableName=self._tables.instances,
                    Key=_key(instance.service, instance.id),
                    UpdateExpression=update,
                    **({} if condition is None else {"ConditionExpression": condition}),
                    ExpressionAttributeNames={"#service": "service", "#schema": "schema"},
                    ExpressionAttributeValues=to_attributes(values),
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
                raise refused(item_from_condition_failure(exc)) from exc
        return items.instance_from_item(from_attributes(response["Attributes"]))

    def record_heartbeat(
        self,
        service: str,
        instance_id: str,
        at: datetime,
        expires_at: datetime,
        *,
        claim: AgentClaim | None = None,
    ) -> None:
        update = "SET heartbeat_ms = :at, expires_at_epoch = :expires"
        condition = "attribute_exists(id)"
        values: dict[str, Any] = {":at": to_epoch_ms(at), ":expires": int(expires_at.timestamp())}
        if claim is not None:
            update += ", agent_lease_ms = :lease"
            condition += " AND agent_owner = :owner"
            values |= {":owner": claim.owner, ":lease": to_epoch_ms(claim.lease_until)}
            if claim.wake_address is not None:
                update += ", wake_address = :wake"
                values[":wake"] = claim.wake_address

        def refused(current: dict[str, Any] | None) -> Exception:
            if current is None:
                return NotFoundError(
                    f"instance {instance_id!r} is not registered (it may have expired); "
                    "the agent registers it again"
                )
            return LockLostError(
                f"instance {instance_id!r} is held by agent {current.get('agent_owner')!r} "
                f"now, not {claim.owner if claim else None!r}"
            )

        conditional_write(
            f"recording the heartbeat of {instance_id!r}",
            lambda: self._client.update_item(
                TableName=self._tables.instances,
                Key=_key(service, instance_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=to_attributes(values),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            ),
            refused,
        )

    def mark_instance_left(self, instance_id: str, at: datetime) -> Instance:
        """EC2 names the machine only: its item(s) are found through the by-instance index
        (more than one if the machine moved between services; the latest is returned)."""
        with translated_errors(f"finding instance {instance_id!r}"):
            keys = [
                str(found["id"])
                for found in paginate(
                    self._client.query,
                    TableName=self._tables.instances,
                    IndexName="by-instance",
                    KeyConditionExpression="instance_id = :instance",
                    ExpressionAttributeValues=to_attributes({":instance": instance_id}),
                )
            ]
        marked = [self._mark_left(key, at) for key in keys]
        found = [instance for instance in marked if instance is not None]
        if not found:
            raise NotFoundError(f"instance {instance_id!r} does not exist")
        return max(found, key=lambda instance: instance.registered_at)

    def _mark_left(self, key: str, at: datetime) -> Instance | None:
        with translated_errors(f"marking {key!r} as gone"):
            try:
                response = self._client.update_item(
                    TableName=self._tables.instances,
                    Key=to_attributes({"id": key}),
                    UpdateExpression="SET left_ms = :at",
                    ConditionExpression="attribute_exists(id)",
                    ExpressionAttributeValues=to_attributes({":at": to_epoch_ms(at)}),
                    ReturnValues="ALL_NEW",
                )
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
                return None  # deleted since the index saw it
        try:
            return items.instance_from_item(from_attributes(response["Attributes"]))
        except MisfiledItemError as refused:
            log.warning("%s", refused)
            return None

    def release_instance(self, service: str, instance_id: str, owner: str) -> bool:
        try:
            with translated_errors(f"releasing instance {instance_id!r}"):
                self._client.update_item(
                    TableName=self._tables.instances,
                    Key=_key(service, instance_id),
                    UpdateExpression="REMOVE agent_owner, agent_lease_ms",
                    ConditionExpression="agent_owner = :owner",
                    ExpressionAttributeValues=to_attributes({":owner": owner}),
                )
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def set_assignment(
        self, service: str, instance_id: str, revision_id: str | None, *, expected_version: int
    ) -> Instance:
        with translated_errors(f"assigning {instance_id!r}"):
            try:
                response = self._client.update_item(
                    TableName=self._tables.instances,
                    Key=_key(service, instance_id),
                    UpdateExpression=(
                        "SET assigned_revision = :revision, assignment_version = :next"
                    ),
                    ConditionExpression=_assignment_is(expected_version),
                    ExpressionAttributeValues=to_attributes(
                        {
                            ":revision": revision_id,
                            ":expected": expected_version,
                            ":next": expected_version + 1,
                        }
                    ),
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
                current = item_from_condition_failure(exc)
                if current is None:
                    raise NotFoundError(f"instance {instance_id!r} does not exist") from exc
                record = items.instance_from_item(current)
                raise ConflictError(
                    f"the assignment of {instance_id!r} changed meanwhile (version "
                    f"{record.assignment_version}, expected {expected_version})",
                    current=record,
                ) from exc
        return items.instance_from_item(from_attributes(response["Attributes"]))

    def set_current_revision(self, service: str, instance_id: str, revision_id: str | None) -> None:
        conditional_write(
            f"recording the current revision of {instance_id!r}",
            lambda: self._client.update_item(
                TableName=self._tables.instances,
                Key=_key(service, instance_id),
                UpdateExpression="SET current_revision = :revision",
                ConditionExpression="attribute_exists(id)",
                ExpressionAttributeValues=to_attributes({":revision": revision_id}),
            ),
            lambda _current: NotFoundError(f"instance {instance_id!r} does not exist"),
        )

    def get_instance(self, service: str, instance_id: str, *, consistent: bool = True) -> Instance:
        item = read_item(
            self._client,
            self._tables.instances,
            {"id": instance_key(service, instance_id)},
            f"instance {instance_id!r}",
            consistent=consistent,
        )
        return items.instance_from_item(item)

    def list_instances(self, service: str) -> list[Instance]:
        # The by-service index is eventually consistent: a just-registered instance can be
        # missing for a moment, which the scheduler's next pass absorbs.
        with translated_errors(f"listing instances of {service!r}"):
            found = list(
                paginate(
                    self._client.query,
                    TableName=self._tables.instances,
                    IndexName="by-service",
                    KeyConditionExpression="#service = :service",
                    ExpressionAttributeNames={"#service": "service"},
                    ExpressionAttributeValues={":service": to_attribute(service)},
                )
            )
        listed = items.decode_listed(found, items.instance_from_item, self._refusals)
        return sorted(listed, key=lambda i: i.id)

    def delete_instance(self, service: str, instance_id: str) -> None:
        with translated_errors(f"deleting instance {instance_id!r}"):
            self._client.delete_item(
                TableName=self._tables.instances, Key=_key(service, instance_id)
            )
