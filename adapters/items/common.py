"""What every stored item has in common: the schema check, clear errors for malformed
items, timestamps as epoch milliseconds, and DynamoDB's size limit.

An item is a plain dict of str, int, bool, bytes, None, lists and dicts: what every
store adapter can hold (the DynamoDB adapter maps it to attribute values, the memory
store keeps copies). Every item carries `schema`; reading an item written by a newer
schema, or one with missing or mistyped fields, raises `SchemaError` with a clear
message instead of a KeyError deep in the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from time import monotonic
from typing import Any, TypeVar

from flotilla.engine.clock import from_epoch_ms, to_epoch_ms
from flotilla.engine.errors import ItemTooLargeError, MisfiledItemError, SchemaError
from flotilla.engine.records import service_of_key

Item = dict[str, Any]
T = TypeVar("T")

log = logging.getLogger(__name__)

# DynamoDB refuses items over 400 KB; we check before writing so the error names the record.
MAX_ITEM_BYTES = 400 * 1024


def ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_epoch_ms(moment)


def time(value: Any) -> datetime | None:
    return None if value is None else from_epoch_ms(int(value))


def check_schema(item: Mapping[str, Any], kind: str, supported: int) -> None:
    schema = item.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise SchemaError(f"stored {kind} item has no schema number: {describe(item)}")
    if schema > supported:
        raise SchemaError(
            f"stored {kind} item {describe(item)} has schema {schema}, newer than this "
            f"flotilla understands ({supported}); upgrade flotilla to read it"
        )


def describe(item: Mapping[str, Any]) -> str:
    for key in ("id", "name"):
        if isinstance(item.get(key), str):
            return repr(item[key])
    return "(no id)"


def optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def binary(value: object) -> bytes:
    """A stored binary field; `bytes(number)` would allocate that many bytes instead."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"expected binary data, found {type(value).__name__}")
    return bytes(value)


def check_key(kind: str, item: Mapping[str, Any], expected: str) -> None:
    """Refuse an item whose key is not the one its own fields give: its service and
    instance are then not what IAM let its writer touch (keys carry the service first)."""
    key = item.get("id")
    if not isinstance(key, str):
        raise SchemaError(f"stored {kind} item has no id: {describe(item)}")
    if key != expected:
        raise MisfiledItemError(
            f"stored {kind} item {key!r} claims service {item.get('service')!r} but its key "
            f"is not {expected!r}: refused (it was not written by that service's workers)"
        )


def is_unscoped(key: object) -> bool:
    """Whether a stored key has the shape used before keys carried the service."""
    return isinstance(key, str) and service_of_key(key) is None


class RefusalWarnings:
    """Which misfiled items a store has warned about, and when. Such an item stays until
    someone deletes it, and a scheduler lists its service every few seconds: each one is
    warned about once an hour per store, not at every listing."""

    REPEAT_AFTER = 3600.0  # seconds
    _REMEMBERED = 1000  # a flood of planted items must not grow this for ever

    def __init__(self, clock: Callable[[], float] = monotonic) -> None:
        self._clock = clock
        self._warned_at: dict[str, float] = {}

    def warn(self, message: str) -> None:
        now = self._clock()
        last = self._warned_at.get(message)
        if last is not None and now - last < self.REPEAT_AFTER:
            return
        if len(self._warned_at) >= self._REMEMBERED:
            self._warned_at.clear()
        self._warned_at[message] = now
        log.warning("%s", message)


def decode_listed(
    found: Iterable[Mapping[str, Any]], decode: Callable[[Any], T], warnings: RefusalWarnings
) -> list[T]:
    """Decode the items of a listing, leaving out (with a warning naming each, now and
    then) those refused as misfiled: one planted item must not stop every reader of the
    service's listing."""
    decoded = []
    for item in found:
        try:
            decoded.append(decode(item))
        except MisfiledItemError as refused:
            warnings.warn(str(refused))
    return decoded


def read(kind: str, item: Mapping[str, Any], build: Callable[[], T]) -> T:
    """Build a record, turning a missing or mistyped field into a clear SchemaError."""
    try:
        return build()
    # OverflowError and OSError: a timestamp out of datetime's range.
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, OSError) as exc:
        raise SchemaError(
            f"stored {kind} item {describe(item)} is malformed ({type(exc).__name__}: {exc}); "
            "it was probably written by another version of flotilla"
        ) from exc


# --- size ----------------------------------------------------------------------------


def item_size(value: Any) -> int:
    """DynamoDB's size of an attribute value in bytes (its documented rules, rounded up).

    Strings and binaries count their bytes, numbers about one byte per two digits plus
    one, maps and lists three bytes of overhead plus one per element, names their bytes.
    """
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, int | float):
        return len(str(abs(value))) // 2 + 2
    if isinstance(value, Mapping):
        return 3 + sum(len(str(k).encode()) + item_size(v) + 1 for k, v in value.items())
    if isinstance(value, list | tuple):
        return 3 + sum(item_size(v) + 1 for v in value)
    raise TypeError(f"cannot size a {type(value).__name__}")


def check_item_size(item: Item, what: str) -> None:
    """Refuse an item DynamoDB would refuse, naming the record and its size."""
    size = item_size(item)
    if size > MAX_ITEM_BYTES:
        raise ItemTooLargeError(
            f"{what} is {size / 1024:.0f} KB stored, over DynamoDB's 400 KB item limit; "
            "make its unit files or environment smaller (large files belong in an image or "
            "an artifact store, not in the revision)"
        )
