"""Users (SSH access) as stored items, and back.

Keys are not re-validated when read (listing must still work if one is bad); `flotilla
keys` checks every line again before printing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flotilla.adapters.items import common
from flotilla.adapters.items.common import Item
from flotilla.engine.users import User

USER_SCHEMA = 1


def user_to_item(record: User) -> Item:
    return {
        "schema": USER_SCHEMA,
        "name": record.name,
        "ssh_keys": list(record.ssh_keys),
        "services": list(record.services),
        "admin": record.admin,
        "active": record.active,
        "version": record.version,
        "created_ms": common.ms(record.created_at),
        "updated_ms": common.ms(record.updated_at),
    }


def user_from_item(item: Mapping[str, Any]) -> User:
    """A stored item as a `User`; `SchemaError` if it is newer or malformed."""
    common.check_schema(item, "user", USER_SCHEMA)

    def build() -> User:
        return User(
            name=_text(item["name"]),
            ssh_keys=_texts(item["ssh_keys"]),
            services=_texts(item["services"]),
            admin=_flag(item["admin"]),
            active=_flag(item["active"]),
            version=int(item["version"]),
            created_at=common.time(item.get("created_ms")),
            updated_at=common.time(item.get("updated_ms")),
        )

    return common.read("user", item, build)


def _texts(value: Any) -> tuple[str, ...]:
    """A stored list of strings (a single string would read as its characters)."""
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise TypeError(f"expected a list of text, got {type(value).__name__}")
    return tuple(_text(v) for v in value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    return value
