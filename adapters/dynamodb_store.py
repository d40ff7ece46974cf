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
import functools
import logging
from datetime import datetime
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from flotilla.adapters import items
from flotilla.adapters.dynamodb_codec import (
    cancellation_reasons,
    conditional_write,
    is_condition_failure,
    paginate,
    read_item,
    to_attribute,
    to_attributes,
    translated_errors,
)
from flotilla.adapters.dynamodb_instances import InstanceItems
from flotilla.adapters.dynamodb_locks import release_update
from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.clock import Clock, to_epoch_ms
from flotilla.engine.config import TableNames
from flotilla.engine.errors import AlreadyExistsError, ConflictError, NotFoundError
from flotilla.engine.records import (
    CurrentRevision,
    Lease,
    Revision,
    Service,
    instance_key,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


class DynamoDBStateStore(InstanceItems):
    """`StateStore` on the tables of one environment (its instances: dynamodb_instances)."""

    def __init__(self, client: Any, tables: TableNames, clock: Clock) -> None:
        self._client = client
        self._tables = tables
        self._clock = clock
        self._refusals = items.RefusalWarnings()

    def _get(self, table: str, key: dict[str, Any], what: str) -> dict[str, Any]:
        return read_item(self._client, table, key, what)

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
            actions.append(
                {"Update": _current_revision_update(self._tables, checkpoint.service, current)}
            )
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
        self, service: str, *, since: datetime | None = None, brief: bool = False
    ) -> list[DeployCheckpoint]:
        return self._query_deploys("by-service", "service", service, since, brief=brief)

    def list_instance_deploys(self, service: str, instance_id: str) -> list[DeployCheckpoint]:
        # The index holds the instance's key (adapters/items/deploys.py).
        key = instance_key(service, instance_id)
        return self._query_deploys("by-instance", "instance_id", key, None)

    def _query_deploys(
        self, index: str, attribute: str, value: str, since: datetime | None, *, brief: bool = False
    ) -> list[DeployCheckpoint]:
        condition = "#key = :value"
        values: dict[str, Any] = {":value": value}
        if since is not None:
            condition += " AND created_ms >= :since"
            values[":since"] = to_epoch_ms(since)
        names = {"#key": attribute}
        projection = {}
        if brief:  # by placeholder: several of the names are DynamoDB's reserved words
            wanted = {f"#b{n}": name for n, name in enumerate(items.BRIEF_ATTRIBUTES)}
            names.update(wanted)
            projection = {"ProjectionExpression": ", ".join(wanted)}
        with translated_errors(f"listing deploys of {value!r}"):
            found = list(
                paginate(
                    self._client.query,
                    TableName=self._tables.deploys,
                    IndexName=index,
                    KeyConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=to_attributes(values),
                    **projection,
                )
            )
        decode = functools.partial(items.deploy_from_item, brief=brief)
        deploys = items.decode_listed(found, decode, self._refusals)
        return sorted(deploys, key=lambda d: (d.created_at, d.id))


def _current_revision_update(
    tables: TableNames, service: str, current: CurrentRevision
) -> dict[str, Any]:
    return {
        "TableName": tables.instances,
        "Key": to_attributes({"id": instance_key(service, current.instance_id)}),
        "UpdateExpression": "SET current_revision = :revision",
        "ConditionExpression": "attribute_exists(id)",
        "ExpressionAttributeValues": to_attributes({":revision": current.revision}),
    }
