"""The wake-up contract, run against the in-memory channels and SQS (a moto server, so the
listener threads' long polls are real HTTP calls that block as SQS's do).

A ring is seen by the next wait; a wait with nothing rung returns False after its time; a
gone channel is `NotFoundError` for a ring and for a wait; closing twice is harmless. On
SQS a ring also ends a wait that is already waiting, at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from flotilla.adapters.memory_wakeups import MemoryWakeUps
from flotilla.adapters.sqs_wakeups import SqsWakeUps
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import NotFoundError
from flotilla.engine.ports import WakeUps
from tests.support.aws import REGION, moto_server


@dataclass
class Backend:
    kind: str
    wakeups: WakeUps
    elapsed: Callable[[], float]  # seconds passed on the backend's clock


def sqs_client(endpoint: str) -> Any:
    return boto3.client(
        "sqs",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(params=["memory", "sqs"])
def backend(request: pytest.FixtureRequest, endpoint: str) -> Iterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()
        start = clock.now()
        yield Backend("memory", MemoryWakeUps(clock), lambda: (clock.now() - start).total_seconds())
        return
    stop = threading.Event()
    client = sqs_client(endpoint)
    began = time.monotonic()
    yield Backend(
        "sqs", SqsWakeUps(client, "contract", stop=stop), lambda: time.monotonic() - began
    )
    stop.set()  # the listener threads end after their current long poll


def test_a_ring_is_seen_once_by_the_next_wait(backend: Backend) -> None:
    address = backend.wakeups.open("i-1")
    assert backend.wakeups.open("i-1") == address  # opening again finds the same channel
    backend.wakeups.ring(address)
    assert backend.wakeups.wait(address, 10) is True
    assert backend.wakeups.wait(address, 0.5) is False  # consumed


def test_a_wait_with_nothing_rung_ends_after_its_time(backend: Backend) -> None:
    address = backend.wakeups.open("i-2")
    before = backend.elapsed()
    assert backend.wakeups.wait(address, 1.0) is False
    assert backend.elapsed() - before >= 1.0


def test_channels_of_different_instances_are_apart(backend: Backend) -> None:
    one, two = backend.wakeups.open("i-3"), backend.wakeups.open("i-4")
    assert one != two
    backend.wakeups.ring(one)
    assert backend.wakeups.wait(two, 0.5) is False
    assert backend.wakeups.wait(one, 10) is True


def test_a_closed_channel_is_gone_for_rings_and_waits(backend: Backend) -> None:
    address = backend.wakeups.open("i-5")
    backend.wakeups.close(address)
    backend.wakeups.close(address)  # harmless
    with pytest.raises(NotFoundError):
        backend.wakeups.ring(address)
    with pytest.raises(NotFoundError):
        backend.wakeups.wait(address, 5)
    reopened = backend.wakeups.open("i-5")  # (real SQS wants 60 s before the same name)
    backend.wakeups.ring(reopened)
    assert backend.wakeups.wait(reopened, 10) is True


def test_ringing_many_at_once_rings_each_and_names_the_gone_ones(backend: Backend) -> None:
    addresses = [backend.wakeups.open(f"i-many-{n}") for n in range(5)]
    gone = backend.wakeups.open("i-many-gone")
    backend.wakeups.close(gone)
    failed = backend.wakeups.ring_all([*addresses, gone])
    assert list(failed) == [gone]
    assert isinstance(failed[gone], NotFoundError)
    for address in addresses:
        assert backend.wakeups.wait(address, 10) is True
        assert backend.wakeups.wait(address, 0.5) is False  # rung once, not more
    assert backend.wakeups.ring_all([]) == {}


def test_on_sqs_a_ring_ends_a_wait_that_is_already_waiting(endpoint: str) -> None:
    client = sqs_client(endpoint)
    stop = threading.Event()
    wakeups = SqsWakeUps(client, "contract", stop=stop)
    address = wakeups.open("i-6")
    results: list[tuple[bool, float]] = []

    def waiter() -> None:
        began = time.monotonic()
        results.append((wakeups.wait(address, 15), time.monotonic() - began))

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.5)
    wakeups.ring(address)
    thread.join(20)
    stop.set()
    assert results
    woken, waited = results[0]
    assert woken is True
    assert waited < 10, "the ring did not end the long poll early"


def test_a_stop_ends_a_wait_at_once(endpoint: str) -> None:
    client = sqs_client(endpoint)
    stop = threading.Event()
    wakeups = SqsWakeUps(client, "contract", stop=stop)
    address = wakeups.open("i-7")
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    assert wakeups.wait(address, 15) is False
    assert time.monotonic() - began < 3
