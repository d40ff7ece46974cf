"""Leases on DynamoDB: named locks with N slots, renewal, and fencing tokens.

Layout in the locks table: one item per (lock name, slot 0..N-1) holding (owner, token,
expiry). A slot is taken by one conditional update that succeeds only if the slot is free
or expired, and that raises the slot's token by one in the same write, so a later holder of
a slot always carries a larger token than any earlier one. A slot item seen for the first
time (never used, or deleted by TTL a day after its last lease ran out) starts from the
current time in milliseconds: larger than any token an earlier item of that slot handed
out, and than the tokens of the per-lock counter (slot -1) that earlier versions kept.
An uncontended acquire is one write: the slot tried first depends on the owner, so
contenders spread over the slots; only when it is taken are the holders read (one query)
and the free slots tried.
Renew and release are conditional on (owner, token): only the holder can do either, and a
holder whose lease ran out cannot renew it back (it must stop: `LockLostError`).
"""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from flotilla.adapters.dynamodb_codec import (
    is_condition_failure,
    paginate,
    to_attributes,
    translated_errors,
)
from flotilla.engine.clock import Clock, from_epoch_ms, to_epoch_ms
from flotilla.engine.errors import LockLostError
from flotilla.engine.records import Lease

LOCK_SCHEMA = 1
# Expired slot items may be deleted by TTL a day later; tokens survive in the counter.
TTL_GRACE = timedelta(days=1)


class DynamoDBLockService:
    """`LockService` on the locks table of one environment."""

    def __init__(self, client: Any, table: str, clock: Clock) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    def acquire(self, name: str, owner: str, *, slots: int, lease: timedelta) -> Lease | None:
        if slots < 1:
            raise ValueError("a lock needs at least one slot")
        now = self._clock.now()
        expires_at = now + lease
        first = zlib.crc32(owner.encode()) % slots
        taken = self._claim(name, first, owner, now, expires_at)
        if taken is None:
            held = {h.slot for h in self.holders(name)}
            for offset in range(1, slots):
                slot = (first + offset) % slots
                if slot not in held:
                    taken = self._claim(name, slot, owner, now, expires_at)
                    if taken is not None:
                        break
        return taken

    def _claim(
        self, name: str, slot: int, owner: str, now: datetime, expires_at: datetime
    ) -> Lease | None:
        try:
            with translated_errors(f"acquiring lock {name!r}"):
                response = self._client.update_item(
                    TableName=self._table,
                    Key=to_attributes({"name": name, "slot": slot}),
                    UpdateExpression=(
                        "SET #owner = :owner, #token = if_not_exists(#token, :start) + :one,"
                        " expires_ms = :expires, expires_at_epoch = :ttl, #schema = :schema"
                    ),
                    ConditionExpression="attribute_not_exists(#owner) OR expires_ms <= :now",
                    ExpressionAttributeNames={
                        "#owner": "owner",
                        "#token": "token",
                        "#schema": "schema",
                    },
                    ExpressionAttributeValues=to_attributes(
                        {
                            ":owner": owner,
                            ":start": to_epoch_ms(now),
                            ":one": 1,
                            ":expires": to_epoch_ms(expires_at),
                            ":ttl": int((expires_at + TTL_GRACE).timestamp()),
                            ":now": to_epoch_ms(now),
                            ":schema": LOCK_SCHEMA,
                        }
                    ),
                    ReturnValues="UPDATED_NEW",
                )
        except ClientError as exc:
            if is_condition_failure(exc):
                return None
            raise
        token = int(response["Attributes"]["token"]["N"])
        return Lease(name, slot, owner, token, from_epoch_ms(to_epoch_ms(expires_at)))

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
                self._client.update_item(**release_update(self._table, lease))
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


def release_update(table: str, lease: Lease) -> dict[str, Any]:
    """The update that frees `lease`'s slot if it still holds it: for `release`, and for
    a checkpoint written together with its deploy's release (dynamodb_store)."""
    return {
        "TableName": table,
        "Key": to_attributes({"name": lease.name, "slot": lease.slot}),
        "UpdateExpression": "REMOVE #owner SET expires_ms = :zero",
        "ConditionExpression": "#owner = :owner AND #token = :token",
        "ExpressionAttributeNames": {"#owner": "owner", "#token": "token"},
        "ExpressionAttributeValues": to_attributes(
            {":owner": lease.owner, ":token": lease.token, ":zero": 0}
        ),
    }
