"""The state store on DynamoDB.

Writes that several parties can race are conditional: services and deploy checkpoints
on their `version`, assignments on `assignment_version`; a losing writer gets a
`ConflictError` with the current record (returned by the failed write itself through
ReturnValuesOnConditionCheckFailure, so a conflict costs no extra read). Instance
fields are updated one owner at a time (heartbeat vs assignment), never by whole-item
puts, so a heartbeat cannot undo an assignment.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from flotilla.adapters import items
from flotilla.adapters.dynamodb_codec import (
    cancellation_reasons,
    conditional_write,
    from_attributes,
    is_condition_failure,
    item_from_condition_failure,
    paginate,
    to_attribute,
    to_attributes,
    translated_errors,
)
from flotilla.adapters.dynamodb_locks import release_update
from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.clock import Clock, to_epoch_ms
from flotilla.engine.config import TableNames
from flotilla.engine.errors import AlreadyExistsError, ConflictError, LockLostError, NotFoundError
from flotilla.engine.records import (
    AgentClaim,
    CurrentRevision,
    Instance,
    Lease,
    Revision,
    Service,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


class DynamoDBStateStore:
    """`StateStore` on the tables of one environment."""

    def __init__(self, client: Any, tables: TableNames, clock: Clock) -> None:
        self._client = client
        self._tables = tables
        self._clock = clock

    # --- helpers ---------------------------------------------------------------------

    def _get(
        self, table: str, key: dict[str, Any], what: str, *, consistent: bool = True
    ) -> dict[str, Any]:
        with translated_errors(f"reading {what}"):
            response = self._client.get_item(
                TableName=table, Key=to_attributes(key), ConsistentRead=consistent
            )
        if "Item" not in response:
            raise NotFoundError(f"{what} does not exist")
        return from_attributes(response["Item"])

    # --- services --------------------------------------------------------------------

    def create_service(self, service: Service) -> Service:
        now = self._clock.now()
        stored = dataclasses.replace(service, version=1, created_at=now, updated_at=now)
        conditional_write(
            f"creating service {service.name!r}",
            lambda: self._client.put_item(
                TableName=self._tables.services,
                Item=to_attributes(items.service_to_item(stored)),
                ConditionExpression="attribute_not_exists(#name)",
                ExpressionAttributeNames={"#name": "name"},
            ),
            lambda _current: AlreadyExistsError(f"service {service.name!r} exists already"),
        )
        return stored

    def get_service(self, name: str) -> Service:
        item = self._get(self._tables.services, {"name": name}, f"service {name!r}")
        return items.service_from_item(item)

    def list_services(self, *, segment: int = 0, segments: int = 1) -> list[Service]:
        with translated_errors("listing services"):
            found = list(
                paginate(
                    self._client.scan,
                    TableName=self._tables.services,
                    Segment=segment,
                    TotalSegments=segments,
                    ConsistentRead=True,
                )
            )
        return sorted((items.service_from_item(i) for i in found), key=lambda s: s.name)

    def update_service(self, service: Service) -> Service:
        stored = dataclasses.replace(
            service, version=service.version + 1, updated_at=self._clock.now()
        )
        conditional_write(
            f"updating service {service.name!r}",
            lambda: self._client.put_item(
                TableName=self._tables.services,
                Item=to_attributes(items.service_to_item(stored)),
                ConditionExpression="#version = :expected",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":expected": to_attribute(service.version)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            ),
            lambda current: self._service_conflict(service.name, service.version, current),
        )
        return stored

    def _service_conflict(
        self, name: str, expected: int, current: dict[str, Any] | None
    ) -> Exception:
        if current is None:
            return NotFoundError(f"service {name!r} does not exist")
        record = items.service_from_item(current)
        return ConflictError(
            f"service {name!r} changed meanwhile (version {record.version}, expected "
            f"{expected}); re-read it and apply the change again",
            current=record,
        )

    def delete_service(self, name: str, *, expected_version: int) -> None:
        conditional_write(
            f"deleting service {name!r}",
            lambda: self._client.delete_item(
                TableName=self._tables.services,
                Key=to_attributes({"name": name}),
                ConditionExpression="#version = :expected",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":expected": to_attribute(expected_version)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            ),
            lambda current: self._service_conflict(name, expected_version, current),
        )

    # --- revisions -------------------------------------------------------------------

    def put_revision(self, revision: Revision) -> Revision:
        item = items.revision_to_item(revision)
        items.check_item_size(item, f"revision {revision.id[:12]} of {revision.service}")
        try:
            with translated_errors(f"storing revision {revision.id[:12]}"):
                self._client.put_item(
                    TableName=self._tables.revisions,
                    Item=to_attributes(item),
                    ConditionExpression="attribute_not_exists(id)",
                )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            # Content-addressed: the same id is the same content, so this is a no-op.
            return self.get_revision(revision.service, revision.id)
        log.debug("stored %s", items.describe_revision(revision))
        return revision

    def get_revision(self, service: str, revision_id: str) -> Revision:
        key = {"service": service, "id": revision_id}
        item = self._get(self._tables.revisions, key, f"revision {revision_id!r} of {service!r}")
        return items.revision_from_item(item)

    def list_revisions(self, service: str) -> list[Revision]:
        with translated_errors(f"listing revisions of {service!r}"):
            found = list(
                paginate(
                    self._client.query,
                    TableName=self._tables.revisions,
                    KeyConditionExpression="service = :service",
                    ExpressionAttributeValues={":service": to_attribute(service)},
                    ConsistentRead=True,
                )
            )
        revisions = (items.revision_from_item(i) for i in found)
        return sorted(revisions, key=lambda r: (r.created_at, r.id))

    # --- instances -------------------------------------------------------------------

    def register_instance(
        self, instance: Instance, *, expires_at: datetime, claim: AgentClaim | None = None
    ) -> Instance:
        """Create the instance, or refresh agent version and heartbeat of an existing one;
        with a claim, take it for that agent process in the same write."""
        item = items.instance_to_item(instance, expires_at=expires_at)
        values = {
            ":service": item["service"],
            ":agent": item["agent_version"],
            ":registered": item["registered_ms"],
            ":heartbeat": item["heartbeat_ms"],
            ":expires": item["expires_at_epoch"],
            ":schema": item["schema"],
            ":zero": 0,
        }
        sets = [
            "#service = :service",
            "agent_version = :agent",
            "heartbeat_ms = :heartbeat",
            "expires_at_epoch = :expires",
            "#schema = :schema",
            "registered_ms = if_not_exists(registered_ms, :registered)",
            "assignment_version = if_not_exists(assignment_version, :zero)",
        ]
        removes: list[str] = []
        condition = "(attribute_not_exists(id) OR #service = :service)"
        if claim is not None:
            sets += ["agent_owner = :owner", "agent_lease_ms = :lease"]
            removes.append("left_ms")  # an agent runs on it: it is back
            # Free, ours, run out, or held by a predecessor proven dead.
            condition += (
                " AND (attribute_not_exists(agent_owner) OR agent_owner IN (:owner, :replacing)"
                " OR agent_lease_ms <= :heartbeat)"
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
            if record is not None and record.service != instance.service:
                return ConflictError(
                    f"instance {instance.id!r} belongs to service {record.service!r}, not "
                    f"{instance.service!r}; an instance is born into one service",
                    current=record,
                )
            owner = None if record is None else record.agent_owner
            return ConflictError(f"instance {instance.id!r} is held by agent {owner!r}", record)

        with translated_errors(f"registering instance {instance.id!r}"):
            try:
                response = self._client.update_item(
                    TableName=self._tables.instances,
                    Key=to_attributes({"id": instance.id}),
                    UpdateExpression=update,
                    ConditionExpression=condition,
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
                Key=to_attributes({"id": instance_id}),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=to_attributes(values),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            ),
            refused,
        )

    def mark_instance_left(self, instance_id: str, at: datetime) -> Instance:
        with translated_errors(f"marking {instance_id!r} as gone"):
            try:
                response = self._client.update_item(
                    TableName=self._tables.instances,
                    Key=to_attributes({"id": instance_id}),
                    UpdateExpression="SET left_ms = :at",
                    ConditionExpression="attribute_exists(id)",
                    ExpressionAttributeValues=to_attributes({":at": to_epoch_ms(at)}),
                    ReturnValues="ALL_NEW",
                )
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
                raise NotFoundError(f"instance {instance_id!r} does not exist") from exc
        return items.instance_from_item(from_attributes(response["Attributes"]))

    def release_instance(self, instance_id: str, owner: str) -> bool:
        try:
            with translated_errors(f"releasing instance {instance_id!r}"):
                self._client.update_item(
                    TableName=self._tables.instances,
                    Key=to_attributes({"id": instance_id}),
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
        self, instance_id: str, revision_id: str | None, *, expected_version: int
    ) -> Instance:
        with translated_errors(f"assigning {instance_id!r}"):
            try:
                response = self._client.update_item(
                    TableName=self._tables.instances,
                    Key=to_attributes({"id": instance_id}),
                    UpdateExpression=(
                        "SET assigned_revision = :revision, assignment_version = :next"
                    ),
                    ConditionExpression="assignment_version = :expected",
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

    def set_current_revision(self, instance_id: str, revision_id: str | None) -> None:
        conditional_write(
            f"recording the current revision of {instance_id!r}",
            lambda: self._client.update_item(
                TableName=self._tables.instances,
                Key=to_attributes({"id": instance_id}),
                UpdateExpression="SET current_revision = :revision",
                ConditionExpression="attribute_exists(id)",
                ExpressionAttributeValues=to_attributes({":revision": revision_id}),
            ),
            lambda _current: NotFoundError(f"instance {instance_id!r} does not exist"),
        )

    def get_instance(self, instance_id: str, *, consistent: bool = True) -> Instance:
        item = self._get(
            self._tables.instances,
            {"id": instance_id},
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
        return sorted((items.instance_from_item(i) for i in found), key=lambda i: i.id)

    def delete_instance(self, instance_id: str) -> None:
        with translated_errors(f"deleting instance {instance_id!r}"):
            self._client.delete_item(
                TableName=self._tables.instances, Key=to_attributes({"id": instance_id})
            )

    # --- deploys ---------------------------------------------------------------------

    def create_deploy(self, checkpoint: DeployCheckpoint) -> DeployCheckpoint:
        stored = dataclasses.replace(checkpoint, version=1)
        conditional_write(
            f"creating deploy {checkpoint.id!r}",
            lambda: self._client.put_item(
                TableName=self._tables.deploys,
                Item=to_attributes(items.deploy_to_item(stored)),
                ConditionExpression="attribute_not_exists(id)",
            ),
            lambda _current: AlreadyExistsError(f"deploy {checkpoint.id!r} exists already"),
        )
        return stored

    def get_deploy(self, deploy_id: str) -> DeployCheckpoint:
        item = self._get(self._tables.deploys, {"id": deploy_id}, f"deploy {deploy_id!r}")
        return items.deploy_from_item(item)

    def update_deploy(
        self,
        checkpoint: DeployCheckpoint,
        *,
        current: CurrentRevision | None = None,
        release: Lease | None = None,
    ) -> DeployCheckpoint:
        stored = dataclasses.replace(checkpoint, version=checkpoint.version + 1)
        item = items.deploy_to_item(stored)
        items.check_item_size(item, f"deploy {checkpoint.id!r}")

        def conflict(current: dict[str, Any] | None) -> Exception:
            if current is None:
                return NotFoundError(f"deploy {checkpoint.id!r} does not exist")
            record = items.deploy_from_item(current)
            return ConflictError(
                f"deploy {checkpoint.id!r} was advanced by another runner (version "
                f"{record.version}, expected {checkpoint.version}); this runner stops",
                current=record,
            )

        what = f"checkpointing deploy {checkpoint.id!r}"
        put = {
            "TableName": self._tables.deploys,
            "Item": to_attributes(item),
            "ConditionExpression": "#version = :expected",
            "ExpressionAttributeNames": {"#version": "version"},
            "ExpressionAttributeValues": {":expected": to_attribute(checkpoint.version)},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if current is None and release is None:
            conditional_write(what, lambda: self._client.put_item(**put), conflict)
            return stored
        # One transaction, one call: the checkpoint with the instance's current revision
        # (never one without the other) and with its slot's release.
        actions: list[dict[str, Any]] = [{"Put": put}]
        if current is not None:
            actions.append({"Update": _current_revision_update(self._tables, current)})
        if release is not None:
            actions.append({"Update": release_update(self._tables.locks, release)})
        with translated_errors(what):
            try:
                self._client.transact_write_items(TransactItems=actions)
            except ClientError as exc:
                failed = [r.code == "ConditionalCheckFailed" for r in cancellation_reasons(exc)]
                if failed and failed[0]:
                    raise conflict(cancellation_reasons(exc)[0].item) from exc
                if current is not None and len(failed) > 1 and failed[1]:
                    raise NotFoundError(f"instance {current.instance_id!r} does not exist") from exc
                if release is not None and failed and failed[-1]:
                    # The slot is not this deploy's any more (it lapsed, or was taken):
                    # nothing to free, and no reason to withhold the checkpoint.
                    return self.update_deploy(checkpoint, current=current)
                raise
        return stored

    def list_deploys(
        self, service: str, *, since: datetime | None = None
    ) -> list[DeployCheckpoint]:
        return self._query_deploys("by-service", "service", service, since)

    def list_instance_deploys(self, instance_id: str) -> list[DeployCheckpoint]:
        return self._query_deploys("by-instance", "instance_id", instance_id, None)

    def _query_deploys(
        self, index: str, attribute: str, value: str, since: datetime | None
    ) -> list[DeployCheckpoint]:
        condition = "#key = :value"
        values: dict[str, Any] = {":value": value}
        if since is not None:
            condition += " AND created_ms >= :since"
            values[":since"] = to_epoch_ms(since)
        with translated_errors(f"listing deploys of {value!r}"):
            found = list(
                paginate(
                    self._client.query,
                    TableName=self._tables.deploys,
                    IndexName=index,
                    KeyConditionExpression=condition,
                    ExpressionAttributeNames={"#key": attribute},
                    ExpressionAttributeValues=to_attributes(values),
                )
            )
        deploys = (items.deploy_from_item(i) for i in found)
        return sorted(deploys, key=lambda d: (d.created_at, d.id))


def _current_revision_update(tables: TableNames, current: CurrentRevision) -> dict[str, Any]:
    return {
        "TableName": tables.instances,
        "Key": to_attributes({"id": current.instance_id}),
        "UpdateExpression": "SET current_revision = :revision",
        "ConditionExpression": "attribute_exists(id)",
        "ExpressionAttributeValues": to_attributes({":revision": current.revision}),
    }
