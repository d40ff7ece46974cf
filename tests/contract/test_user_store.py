"""The user store contract, run against memory, moto and DynamoDB Local.

Creating is create-only, updating and deleting are conditional on the version; a loser
gets `ConflictError` with the current user. The race runs on memory and DynamoDB Local.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from flotilla.adapters.dynamodb_users import DynamoDBUserStore
from flotilla.adapters.items import users as stored_users
from flotilla.adapters.memory_users import MemoryUserStore
from flotilla.engine.errors import AlreadyExistsError, ConflictError, NotFoundError, SchemaError
from flotilla.engine.ports import UserStore
from flotilla.engine.users import User
from tests.contract.conftest import Backend

KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB alice@laptop"
)


def user_store(backend: Backend) -> UserStore:
    if backend.kind == "memory":
        return MemoryUserStore(backend.clock)
    assert backend.tables is not None
    return DynamoDBUserStore(backend.client, backend.tables.users, backend.clock)


@pytest.fixture
def store(backend: Backend) -> UserStore:
    return user_store(backend)


def alice(**changes: object) -> User:
    record = User("alice", ssh_keys=(KEY,), services=("api", "web"))
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def test_a_created_user_reads_back_equal_with_version_one(
    store: UserStore, backend: Backend
) -> None:
    created = store.put_user(alice())
    assert created.version == 1
    assert created.created_at == created.updated_at == backend.clock.now()
    assert store.get_user("alice") == created
    assert store.list_users() == [created]


def test_creating_a_user_twice_fails_and_keeps_the_first(store: UserStore) -> None:
    first = store.put_user(alice())
    with pytest.raises(AlreadyExistsError, match="'alice'"):
        store.put_user(alice(admin=True))
    assert store.get_user("alice") == first


def test_an_update_on_a_stale_version_conflicts_and_carries_the_current(
    store: UserStore, backend: Backend
) -> None:
    created = store.put_user(alice())
    backend.clock.advance(60)
    first = store.put_user(dataclasses.replace(created, active=False))
    assert first.version == 2
    assert first.created_at == created.created_at
    assert first.updated_at == backend.clock.now()
    with pytest.raises(ConflictError) as raised:
        store.put_user(dataclasses.replace(created, admin=True))
    assert raised.value.current == first
    assert store.get_user("alice") == first


def test_a_missing_user_is_not_found(store: UserStore) -> None:
    with pytest.raises(NotFoundError, match="'bob'"):
        store.get_user("bob")
    with pytest.raises(NotFoundError):
        store.put_user(alice(name="bob", version=3))
    with pytest.raises(NotFoundError):
        store.delete_user("bob", expected_version=1)
    assert store.list_users() == []


def test_delete_is_conditional_on_the_version(store: UserStore) -> None:
    created = store.put_user(alice())
    updated = store.put_user(created)
    with pytest.raises(ConflictError) as raised:
        store.delete_user("alice", expected_version=created.version)
    assert raised.value.current == updated
    store.delete_user("alice", expected_version=updated.version)
    assert store.list_users() == []


def test_users_are_listed_by_name_with_empty_keys_and_services(store: UserStore) -> None:
    for name in ("carol", "alice", "bob"):
        store.put_user(User(name))
    listed = store.list_users()
    assert [u.name for u in listed] == ["alice", "bob", "carol"]
    assert all(u.ssh_keys == () and u.services == () for u in listed)


def test_stored_user_items_carry_a_schema_number(store: UserStore, backend: Backend) -> None:
    store.put_user(alice())
    if backend.kind == "memory":
        assert isinstance(store, MemoryUserStore)
        found = store.items()
    else:
        assert backend.tables is not None
        found = backend.client.scan(TableName=backend.tables.users)["Items"]
    assert len(found) == 1
    schema = found[0]["schema"]
    assert (int(schema["N"]) if isinstance(schema, dict) else schema) == stored_users.USER_SCHEMA


def test_an_item_from_a_newer_schema_is_refused_clearly(dynamodb_backend: Backend) -> None:
    """Only DynamoDB can hold an item another version wrote; the memory store cannot."""
    backend = dynamodb_backend
    assert backend.tables is not None
    item = stored_users.user_to_item(alice(version=1))
    backend.client.put_item(
        TableName=backend.tables.users,
        Item={
            "name": {"S": "alice"},
            "schema": {"N": str(stored_users.USER_SCHEMA + 1)},
            "version": {"N": str(item["version"])},
        },
    )
    store = user_store(backend)
    with pytest.raises(SchemaError, match="newer than this flotilla"):
        store.get_user("alice")
    with pytest.raises(SchemaError):
        store.list_users()


@pytest.fixture
def concurrent_store(concurrent_backend: Backend) -> UserStore:
    return user_store(concurrent_backend)


def test_concurrent_changes_to_a_user_are_never_lost(concurrent_store: UserStore) -> None:
    """Eight writers each add their own service by read-modify-write; all eight land."""
    store = concurrent_store
    store.put_user(User("alice"))
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def add_service(number: int) -> None:
        try:
            barrier.wait()
            current = store.get_user("alice")
            while True:
                changed = dataclasses.replace(
                    current, services=(*current.services, f"svc-{number}")
                )
                try:
                    store.put_user(changed)
                    return
                except ConflictError as conflict:
                    if not isinstance(conflict.current, User):
                        raise
                    current = conflict.current
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add_service, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    final = store.get_user("alice")
    assert sorted(final.services) == sorted(f"svc-{n}" for n in range(8))
    assert final.version == 9
