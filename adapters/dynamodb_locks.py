"""Leases on DynamoDB: named locks with N slots, renewal, and fencing tokens.

Layout in the locks table, per lock name:
- slot -1 is a counter; every acquisition first takes the next token from it (ADD), so
  tokens only grow, even when slot items are deleted by TTL;
- slots 0..N-1 hold (owner, token, expiry). A slot is taken by a conditional update that
  succeeds only if the slot is free or expired AND its last token is smaller than ours,
  so a later holder of a slot always carries a larger token than any earlier one.
Renew and release are conditional on (owner, token): only the holder can do either, and a
holder whose lease ran out cannot renew it back (it must stop: `LockLostError`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from flotilla.adapters.dynamodb_codec import (
    is_condition_failure,
    paginate,
    to_attribute,
    to_attributes,
    translated_errors,
)
from flotilla.engine.clock import Clock, from_epoch_ms, to_epoch_ms
from flotilla.engine.errors import LockLostError
from flotilla.engine.records import Lease

COUNTER_SLOT = -1
LOCK_SCHEMA = 1
# Expired slot items may be deleted by TTL a day later; tokens survive in the counter.
TTL_GRACE = timedelta(days=1)


class DynamoDBLockService:
    """`LockService` on the locks table of one environment."""

    def __init__(self, client: Any, table: str, clock: Clock) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    def _next_token(self, name: str) -> int:
        with translated_errors(f"taking a token for lock {name!r}"):
            response = self._client.update_item(
                TableName=self._table,
                Key=to_attributes({"name": name, "slot": COUNTER_SLOT}),
                UpdateExpression="ADD #token :one",
                ExpressionAttributeNames={"#token": "token"},
                ExpressionAttributeValues={":one": to_attribute(1)},
                ReturnValues="UPDATED_NEW",
            )
        return int(response["Attributes"]["token"]["N"])

    def acquire(self, name: str, owner: str, *, slots: int, lease: timedelta) -> Lease | None:
        if slots < 1:
            raise ValueError("a lock needs at least one slot")
        token = self._next_token(name)
        now = self._clock.now()
        expires_at = now + lease
        # Start at a slot that depends on the token, so contenders spread over the slots.
        for offset in range(slots):
            slot = (token + offset) % slots
            if self._claim(name, slot, owner, token, now, expires_at):
                return Lease(name, slot, owner, token, from_epoch_ms(to_epoch_ms(expires_at)))
        return None

    def _claim(
        self, name: str, slot: int, owner: str, token: int, now: datetime, expires_at: datetime
    ) -> bool:
        try:
            with translated_errors(f"acquiring lock {name!r}"):
                self._client.update_item(
                    TableName=self._table,
                    Key=to_attributes({"name": name, "slot": slot}),
                    UpdateExpression=(
                        "SET #owner = :owner, #token = :token, expires_ms = :expires,"
                        " expires_at_epoch = :ttl, #schema = :schema"
                    ),
                    ConditionExpression=(
                        "(attribute_not_exists(#owner) OR expires_ms <= :now)"
                        " AND (attribute_not_exists(#token) OR #token < :token)"
                    ),
                    ExpressionAttributeNames={
                        "#owner": "owner",
                        "#token": "token",
                        "#schema": "schema",
                    },
                    ExpressionAttributeValues=to_attributes(
                        {
                            ":owner": owner,
                            ":token": token,
                            ":expires": to_epoch_ms(expires_at),
                            ":ttl": int((expires_at + TTL_GRACE).timestamp()),
                            ":now": to_epoch_ms(now),
                            ":schema": LOCK_SCHEMA,
                        }
                    ),
                )
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def renew(self, lease: Lease, *, duration: timedelta) -> Lease:
        now = self._clock.now()
        expires_at = now + duration
        try:
            with translated_errors(f"renewing lock {lease.name!r}"):
                self._client.update_item(
                    TableName=self._table,
                    Key=to_attributes({"name": lease.name, "slot": lease.slot}),
                    UpdateExpression="SET expires_ms = :expires, expires_at_epoch = :ttl",
                    ConditionExpression="#owner = :owner AND #token = :token AND expires_ms > :now",
                    ExpressionAttributeNames={"#owner": "owner", "#token": "token"},
                    ExpressionAttributeValues=to_attributes(
                        {
                            ":owner": lease.owner,
                            ":token": lease.token,
                            ":expires": to_epoch_ms(expires_at),
                            ":ttl": int((expires_at + TTL_GRACE).timestamp()),
                            ":now": to_epoch_ms(now),
                        }
                    ),
                )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            raise LockLostError(
                f"lease on {lease.name!r} slot {lease.slot} (token {lease.token}) is no longer "
                "held: it expired or another holder took it; stop what it protected"
            ) from exc
        return Lease(
            lease.name, lease.slot, lease.owner, lease.token, from_epoch_ms(to_epoch_ms(expires_at))
        )

    def release(self, lease: Lease) -> bool:
        try:
            with translated_errors(f"releasing lock {lease.name!r}"):
                self._client.update_item(
                    TableName=self._table,
                    Key=to_attributes({"name": lease.name, "slot": lease.slot}),
                    UpdateExpression="REMOVE #owner SET expires_ms = :zero",
                    ConditionExpression="#owner = :owner AND #token = :token",
                    ExpressionAttributeNames={"#owner": "owner", "#token": "token"},
                    ExpressionAttributeValues=to_attributes(
                        {":owner": lease.owner, ":token": lease.token, ":zero": 0}
                    ),
                )
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def holders(self, name: str) -> list[Lease]:
        now_ms = to_epoch_ms(self._clock.now())
        with translated_errors(f"reading lock {name!r}"):
            found = list(
                paginate(
                    self._client.query,
                    TableName=self._table,
                    KeyConditionExpression="#name = :name AND slot >= :first",
                    ExpressionAttributeNames={"#name": "name"},
                    ExpressionAttributeValues=to_attributes({":name": name, ":first": 0}),
                    ConsistentRead=True,
                )
            )
        return [
            Lease(
                name,
                int(i["slot"]),
                str(i["owner"]),
                int(i["token"]),
                from_epoch_ms(i["expires_ms"]),
            )
            for i in found
            if "owner" in i and int(i["expires_ms"]) > now_ms
        ]
