"""One moto (in-process) for the bad-input suite; each module seeds its own environment."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator

import pytest
from moto import mock_aws

from flotilla.engine.deploy.agent import Agent
from flotilla.scheduler.service import Scheduler


@pytest.fixture(scope="package", autouse=True)
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def daemons_never_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused `agent`/`scheduler` must stop before running; if one started, fail fast.

    Their logging and tracing set-up is process-wide, so it is skipped in-process. The
    modules that run commands in-process use it for every test (`pytestmark`).
    """

    def started(*_: object, **__: object) -> None:
        raise AssertionError("a daemon started on bad input")

    monkeypatch.setattr(Agent, "run", started)
    monkeypatch.setattr(Scheduler, "run", started)
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    import flotilla.cli.daemon  # noqa: F401 -- loaded lazily by the CLI: patched here first

    for name, module in list(sys.modules.items()):
        if name.startswith("flotilla.cli"):
            for setup in ("configure_logging", "configure_tracing"):
                if hasattr(module, setup):
                    monkeypatch.setattr(module, setup, lambda *_, **__: None)
