"""The user store on DynamoDB: the environment's users table (hash key `name`).

Writes are conditional: creating on the name being absent, updating and deleting on
the stored `version`. A losing writer gets `ConflictError` with the current user,
returned by the failed write itself (ReturnValuesOnConditionCheckFailure).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flotilla.adapters.dynamodb_codec import (
    conditional_write,
    from_attributes,
    paginate,
    to_attribute,
    to_attributes,
    translated_errors,
)
from flotilla.adapters.items.users import user_from_item, user_to_item
from flotilla.engine.clock import Clock
from flotilla.engine.errors import AlreadyExistsError, ConflictError, NotFoundError
from flotilla.engine.users import User

_NAMES = {"#name": "name", "#version": "version"}


class DynamoDBUserStore:
    """`UserStore` on one environment's users table."""

    def __init__(self, client: Any, table: str, clock: Clock) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    def put_user(self, user: User) -> User:
        now = self._clock.now()
        if user.version == 0:
            stored = dataclasses.replace(user, version=1, created_at=now, updated_at=now)
            conditional_write(
                f"creating user {user.name!r}",
                lambda: self._client.put_item(
                    TableName=self._table,
                    Item=to_attributes(user_to_item(stored)),
                    ConditionExpression="attribute_not_exists(#name)",
                    ExpressionAttributeNames={"#name": "name"},
                ),
                lambda _current: AlreadyExistsError(f"user {user.name!r} exists already"),
            )
            return stored
        stored = dataclasses.replace(user, version=user.version + 1, updated_at=now)
        conditional_write(
            f"updating user {user.name!r}",
            lambda: self._client.put_item(
                TableName=self._table,
                Item=to_attributes(user_to_item(stored)),
                ConditionExpression="attribute_exists(#name) AND #version = :expected",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={":expected": to_attribute(user.version)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            ),
            lambda current: _conflict(user.name, user.version, current),
        )
        return stored

    def get_user(self, name: str) -> User:
        with translated_errors(f"reading user {name!r}"):
            response = self._client.get_item(
                TableName=self._table, Key=to_attributes({"name": name}), ConsistentRead=True
            )
        if "Item" not in response:
            raise NotFoundError(f"user {name!r} does not exist")
        return user_from_item(from_attributes(response["Item"]))

    def delete_user(self, name: str, *, expected_version: int) -> None:
        conditional_write(
            f"deleting user {name!r}",
            lambda: self._client.delete_item(
                TableName=self._table,
                Key=to_attributes({"name": name}),
                ConditionExpression="attribute_exists(#name) AND #version = :expected",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={":expected": to_attribute(expected_version)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            ),
            lambda current: _conflict(name, expected_version, current),
        )

    def list_users(self) -> list[User]:
        with translated_errors("listing users"):
            found = list(paginate(self._client.scan, TableName=self._table, ConsistentRead=True))
        return sorted((user_from_item(item) for item in found), key=lambda u: u.name)


def _conflict(name: str, expected: int, current: dict[str, Any] | None) -> Exception:
    if current is None:
        return NotFoundError(f"user {name!r} does not exist")
    record = user_from_item(current)
    return ConflictError(
        f"user {name!r} changed meanwhile (version {record.version}, expected {expected}); "
        "re-read it and apply the change again",
        current=record,
    )
