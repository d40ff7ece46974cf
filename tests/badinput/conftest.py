"""One moto (in-process) for the bad-input suite; each module seeds its own environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws


@pytest.fixture(scope="package", autouse=True)
def aws() -> Iterator[None]:
    with mock_aws():
        yield
