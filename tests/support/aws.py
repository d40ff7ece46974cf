"""Real AWS stand-ins for tests: Amazon's DynamoDB Local, moto, and a call counter (the
testbed's, testbed/aws.py, which the benchmarks share).

A missing tool is a failure with the command that installs it, never a skip: under CI
no test may be skipped for a missing tool (README, `./scripts/setup`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from testbed import aws
from testbed.aws import (
    REGION,
    CallCounter,
    MissingTool,
    create_environment_stack,
    dynamodb_client,
    free_port,
    moto_server,
)

__all__ = [
    "REGION",
    "CallCounter",
    "create_environment_stack",
    "dynamodb_client",
    "dynamodb_local",
    "dynamodb_local_jar",
    "free_port",
    "moto_server",
]


def dynamodb_local_jar() -> Path:
    try:
        return aws.dynamodb_local_jar()
    except MissingTool as missing:
        pytest.fail(str(missing), pytrace=False)


@contextmanager
def dynamodb_local() -> Iterator[str]:
    """Amazon's DynamoDB Local, in memory, on a free loopback port; yields its endpoint URL."""
    dynamodb_local_jar()  # fails the test, with how to install it, before starting anything
    with aws.dynamodb_local() as endpoint:
        yield endpoint
