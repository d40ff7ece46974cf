"""Fixtures for tests on booted Debian 12 machines (tests/support/booted_machine.py).

- `base_root`: the cached base image, built once (the figure is printed).
- `boot_machine`: boots machines for a test and stops them at its end; kept for a
  post-mortem when the test failed.
- `imds`: the fake instance metadata service on 169.254.169.254.
- `signals`: a CloudFormation endpoint recording SignalResource calls.

A host that cannot boot machines fails these tests with what to install, never skips them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.support.booted_machine import (
    BootedMachine,
    base_image,
    missing_host_tools,
    stop_all_machines,
)
from tests.support.fake_imds import FakeImds, fake_imds
from tests.support.signal_recorder import SignalRecorder, signal_recorder

BootMachine = Callable[..., BootedMachine]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, None]:
    """Keep each phase's report on the test, so `boot_machine` knows whether it failed."""
    outcome = yield
    report = outcome.get_result()
    item.stash.setdefault(_REPORTS, {})[report.when] = report


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.fixture(scope="session", autouse=True)
def _no_machine_outlives_the_session() -> Iterator[None]:
    yield
    stop_all_machines()


@pytest.fixture(scope="session")
def base_root() -> Path:
    missing = missing_host_tools()
    if missing:
        pytest.fail(
            "cannot boot machines here; missing: " + "; ".join(missing) + " (./scripts/setup)",
            pytrace=False,
        )
    started = time.monotonic()
    root = base_image()
    print(f"\ntiming: base image ready in {time.monotonic() - started:.1f} s ({root})")
    return root


@pytest.fixture
def boot_machine(base_root: Path, request: pytest.FixtureRequest) -> Iterator[BootMachine]:
    """`boot_machine(name, sshd_port=None)`: a booted machine, stopped after the test."""
    machines: list[BootedMachine] = []

    def boot(name: str, *, sshd_port: int | None = None) -> BootedMachine:
        machine = BootedMachine(name, sshd_port=sshd_port)
        machines.append(machine)
        machine.boot()
        return machine

    yield boot
    failed = any(report.failed for report in request.node.stash.get(_REPORTS, {}).values())
    with contextlib.ExitStack() as teardown:  # every machine is stopped, even if one fails to
        for machine in machines:
            teardown.callback(machine.stop if failed else machine.remove)
    if failed:
        for machine in machines:
            print(f"machine {machine.name} kept for a post-mortem: {machine.run_dir}")


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    with fake_imds(instance_id="i-0feedc0ffee000001", region="eu-west-1") as served:
        yield served


@pytest.fixture
def signals() -> Iterator[SignalRecorder]:
    with signal_recorder() as recorder:
        yield recorder
