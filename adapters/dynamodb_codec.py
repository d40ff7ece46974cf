"""The edge between Flotilla and botocore for DynamoDB: item codec and error translation.

Items (see `adapters.items`) become DynamoDB attribute values and back; botocore's errors
become engine errors, so nothing outside `adapters/` names a botocore type. What is
DynamoDB's own is here (a failed condition is an answer, not an error; an item too large;
a missing table); throttling and everything else every AWS service shares is decided by
the one AWS error edge, `adapters.aws_errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from flotilla.adapters import aws_errors
from flotilla.adapters.aws_errors import error_code, error_message
from flotilla.engine.errors import (
    FlotillaError,
    ItemTooLargeError,
    NotFoundError,
    TransientError,
)

SERVICE = "DynamoDB"
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

# botocore's own retries are set explicitly (standard mode, few attempts) so that they do
# not multiply with the engine's step-level tenacity policies (DESIGN.md): three requests
# in all per call (total_max_attempts counts the first one; max_attempts would not).
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 3}, connect_timeout=5, read_timeout=10
)
# The DynamoDB client's: the same, without botocore's check of every request against the
# API's model before sending it. Every DynamoDB request is built by this codec, and
# DynamoDB checks it again on arrival (the contract suite runs the store against Amazon's
# DynamoDB Local, which does too); the check was the largest share of the client's own
# time, 0.3-0.4 ms a call on a deploy's twelve calls (docs/figures.md).
DYNAMODB_CLIENT_CONFIG = CLIENT_CONFIG.merge(Config(parameter_validation=False))

# boto3's stubs type attribute values as TypedDicts; items here are built and read
# generically, so they are kept as plain dicts.
AttributeValue = Any


def to_attributes(item: Mapping[str, Any]) -> dict[str, AttributeValue]:
    return {key: to_attribute(value) for key, value in item.items()}


def to_attribute(value: Any) -> AttributeValue:
    """boto3's serialization, with the types items hold written out: boto3's own checks
    every type in turn at every level (a deploy's checkpoint is rewritten at every
    transition). Anything else (Decimal, sets, bytes, and floats, which it refuses) is
    left to boto3, whose rules this follows."""
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool):  # before int: a bool is an int
        return {"BOOL": value}
    if isinstance(value, int) and abs(value) < _EXACT_NUMBERS:
        return {"N": str(value)}
    if value is None:
        return {"NULL": True}
    if isinstance(value, dict):
        return {"M": {key: to_attribute(inner) for key, inner in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [to_attribute(inner) for inner in value]}
    serialized: AttributeValue = _serializer.serialize(value)
    return serialized


# DynamoDB keeps 38 significant digits; larger integers go through boto3, which refuses
# those it would round.
_EXACT_NUMBERS = 10**38


def from_attributes(attributes: Mapping[str, AttributeValue]) -> dict[str, Any]:
    return {key: _plain(_deserializer.deserialize(value)) for key, value in attributes.items()}


def _plain(value: Any) -> Any:
    """Decimals back to ints, Binary back to bytes, recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary):
        raw: Any = getattr(value, "value")  # noqa: B009 -- the stubs omit `value`
        return bytes(raw)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def is_condition_failure(exc: ClientError) -> bool:
    return error_code(exc) == "ConditionalCheckFailedException"


def item_from_condition_failure(exc: ClientError) -> dict[str, Any] | None:
    """The current item returned with a failed condition (ReturnValuesOnConditionCheckFailure)."""
    attributes: Any = exc.response.get("Item")
    return None if not attributes else from_attributes(attributes)


def read_item(
    client: Any, table: str, key: dict[str, Any], what: str, *, consistent: bool = True
) -> dict[str, Any]:
    """One item by its key, as a plain dict; `NotFoundError` (naming `what`) if absent."""
    with translated_errors(f"reading {what}"):
        response = client.get_item(
            TableName=table, Key=to_attributes(key), ConsistentRead=consistent
        )
    if "Item" not in response:
        raise NotFoundError(f"{what} does not exist")
    return from_attributes(response["Item"])


@dataclass(frozen=True)
class CancellationReason:
    """Why one item of a cancelled transaction was refused (DynamoDB's `Code`), with the
    item as it is when its condition failed (`ReturnValuesOnConditionCheckFailure`)."""

    code: str
    item: dict[str, Any] | None


def cancellation_reasons(exc: ClientError) -> list[CancellationReason]:
    """Per item of a cancelled transaction, in order; empty for any other error."""
    if error_code(exc) != "TransactionCanceledException":
        return []
    reasons: Any = exc.response.get("CancellationReasons") or []
    return [
        CancellationReason(
            str(reason.get("Code") or "None"),
            from_attributes(reason["Item"]) if reason.get("Item") else None,
        )
        for reason in reasons
    ]


def conditional_write(
    what: str,
    write: Callable[[], Any],
    on_conflict: Callable[[dict[str, Any] | None], Exception],
) -> None:
    """Run a conditional write; a failed condition becomes `on_conflict(current item)`."""
    try:
        with translated_errors(what):
            write()
    except ClientError as exc:
        if not is_condition_failure(exc):
            raise
        raise on_conflict(item_from_condition_failure(exc)) from exc


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Turn botocore failures of `what` into engine errors; condition failures pass through."""
    try:
        yield
    except ClientError as exc:
        if is_condition_failure(exc):
            raise
        raise translate(exc, what) from exc
    except BotoCoreError as exc:
        raise aws_errors.translate_botocore_error(exc, SERVICE, what) from exc


# Why a transaction can be cancelled that retrying may cure: another transaction held one
# of its items, or the table was throttled.
_TRANSIENT_CANCELLATIONS = frozenset(
    {
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
    }
)


def translate(exc: ClientError, what: str) -> FlotillaError:
    message = error_message(exc)
    if any(r.code in _TRANSIENT_CANCELLATIONS for r in cancellation_reasons(exc)):
        return TransientError(f"{what}: DynamoDB cancelled the transaction ({message}); will retry")
    if error_code(exc) == "ValidationException" and "size" in message.lower():
        return ItemTooLargeError(f"{what}: DynamoDB refused the item as too large ({message})")
    missing_table = (
        f"a Flotilla table does not exist ({message}); create the environment first with "
        "`flotilla init`, or check --env and --region"
    )
    return aws_errors.translate(
        exc, SERVICE, what, missing={"ResourceNotFoundException": missing_table}
    )


def paginate(call: Callable[..., dict[str, Any]], **request: Any) -> Iterator[dict[str, Any]]:
    """Every item of a Query or Scan, following LastEvaluatedKey."""
    while True:
        page = call(**request)
        for attributes in page.get("Items", []):
            yield from_attributes(attributes)
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        request["ExclusiveStartKey"] = last
