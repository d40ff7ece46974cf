"""Backends for the contract suites: one suite, written once, run against every implementation.

`backend` is parametrized over the in-memory store, moto (in-process, tables created by
the environment stack in moto's CloudFormation) and Amazon's DynamoDB Local (tables
created from the same template). `concurrent_backend` leaves moto out: moto in-process
loses conditional updates under threads (DESIGN.md), so it can neither prove nor
disprove a race.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from moto import mock_aws

from flotilla.adapters.dynamodb_locks import DynamoDBLockService
from flotilla.adapters.dynamodb_store import DynamoDBStateStore
from flotilla.adapters.memory_locks import MemoryLockService
from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.adapters.templates import create_tables
from flotilla.engine.clock import FakeClock
from flotilla.engine.config import TableNames
from flotilla.engine.ports import LockService, StateStore
from tests.support.aws import CallCounter, create_environment_stack, dynamodb_client, dynamodb_local

_environments = itertools.count(1)


def _clock() -> FakeClock:
    # Start at the real time: DynamoDB Local really deletes items whose TTL attribute lies
    # in the past, so a fake clock set in the past would see its leases vanish at random.
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@dataclass
class Backend:
    """One implementation of the data layer, ready for a test."""

    kind: str  # "memory", "moto" or "dynamodb_local"
    clock: FakeClock
    store: StateStore
    locks: LockService
    tables: TableNames | None = None
    client: Any = None  # the boto3 DynamoDB client, for the DynamoDB-backed kinds
    calls: CallCounter | None = None

    def scan_everything(self) -> list[dict[str, Any]]:
        """Every stored item of every table, as raw as the backend keeps it."""
        if isinstance(self.store, MemoryStateStore):
            return self.store.items()
        assert self.tables is not None
        found = []
        for table in vars(self.tables).values():
            paginator = self.client.get_paginator("scan")
            for page in paginator.paginate(TableName=table):
                found.extend(page["Items"])
        return found


@pytest.fixture(scope="session")
def dynamodb_local_endpoint() -> Iterator[str]:
    with dynamodb_local() as endpoint:
        yield endpoint


def _dynamodb_backend(kind: str, client: Any, environment: str) -> Backend:
    clock = _clock()
    tables = TableNames.for_environment(environment)
    return Backend(
        kind=kind,
        clock=clock,
        store=DynamoDBStateStore(client, tables, clock),
        locks=DynamoDBLockService(client, tables.locks, clock),
        tables=tables,
        client=client,
        calls=CallCounter(client),
    )


def _make_backend(kind: str, request: pytest.FixtureRequest) -> Iterator[Backend]:
    if kind == "memory":
        clock = _clock()
        locks = MemoryLockService(clock)
        yield Backend(kind=kind, clock=clock, store=MemoryStateStore(clock, locks), locks=locks)
    elif kind == "moto":
        with mock_aws():
            create_environment_stack("contract")
            yield _dynamodb_backend(kind, dynamodb_client(), "contract")
    else:
        endpoint = request.getfixturevalue("dynamodb_local_endpoint")
        client = dynamodb_client(endpoint)
        environment = f"t{next(_environments)}"
        create_tables(client, environment)
        yield _dynamodb_backend(kind, client, environment)


@pytest.fixture(params=["memory", "moto", "dynamodb_local"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from _make_backend(request.param, request)


@pytest.fixture(params=["memory", "dynamodb_local"])
def concurrent_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from _make_backend(request.param, request)


@pytest.fixture(params=["moto", "dynamodb_local"])
def dynamodb_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Only the DynamoDB-backed kinds: for what costs DynamoDB calls."""
    yield from _make_backend(request.param, request)
