"""The user store in memory: a real implementation for unit tests and the demo.

It keeps the same stored items as the DynamoDB store (through `adapters.items.users`) and
applies the same conditions under one lock; it passes the same contract suite.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from typing import Any

from flotilla.adapters.items.users import user_from_item, user_to_item
from flotilla.engine.clock import Clock
from flotilla.engine.errors import AlreadyExistsError, ConflictError, NotFoundError
from flotilla.engine.users import User


class MemoryUserStore:
    """`UserStore` held in a dict of stored items."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._users: dict[str, dict[str, Any]] = {}

    def put_user(self, user: User) -> User:
        now = self._clock.now()
        if user.version == 0:
            stored = dataclasses.replace(user, version=1, created_at=now, updated_at=now)
        else:
            stored = dataclasses.replace(user, version=user.version + 1, updated_at=now)
        with self._lock:
            if user.version == 0:
                if user.name in self._users:
                    raise AlreadyExistsError(f"user {user.name!r} exists already")
            else:
                self._check_version(user.name, user.version)
            self._users[user.name] = user_to_item(stored)
        return stored

    def get_user(self, name: str) -> User:
        with self._lock:
            item = copy.deepcopy(self._users.get(name))
        if item is None:
            raise NotFoundError(f"user {name!r} does not exist")
        return user_from_item(item)

    def delete_user(self, name: str, *, expected_version: int) -> None:
        with self._lock:
            self._check_version(name, expected_version)
            del self._users[name]

    def list_users(self) -> list[User]:
        with self._lock:
            found = [copy.deepcopy(item) for item in self._users.values()]
        return sorted((user_from_item(item) for item in found), key=lambda u: u.name)

    def items(self) -> list[dict[str, Any]]:
        """A copy of every stored item (what a scan of the users table returns)."""
        with self._lock:
            return [copy.deepcopy(item) for item in self._users.values()]

    def _check_version(self, name: str, expected: int) -> None:
        current = self._users.get(name)
        if current is None:
            raise NotFoundError(f"user {name!r} does not exist")
        if current["version"] != expected:
            record = user_from_item(copy.deepcopy(current))
            raise ConflictError(
                f"user {name!r} changed meanwhile (version {record.version}, expected "
                f"{expected}); re-read it and apply the change again",
                current=record,
            )
