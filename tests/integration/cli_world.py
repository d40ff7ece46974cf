"""The world the CLI's rollout tests share, on a moto server: the environment stack
through CloudFormation, services and revisions through the CLI as an operator would,
instances and deploys through the store (fake agents), assignments by real scheduler
passes. Each test module makes its own (`cli_world`), so its services start clean.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.cli.wiring import AwsSettings, Wiring
from flotilla.engine.clock import Clock, SystemClock
from flotilla.engine.ports import StateStore
from flotilla.scheduler.gates import GateReaders
from flotilla.scheduler.pass_ import PassReport, PassSettings, SchedulerPass
from tests.integration.test_cli_commands import Cli
from tests.support.aws import REGION, create_environment_stack, moto_server


@dataclass
class CliWorld:
    cli: Cli
    wiring: Wiring
    tmp: Path

    @property
    def store(self) -> StateStore:
        return self.wiring.store

    def scheduler_pass(self, clock: Clock | None = None, *, gates: bool = False) -> PassReport:
        """One pass of a scheduler that never loses its lease; `gates`: with the
        environment's own alarm and webhook readers."""
        readers = GateReaders(self.wiring.alarms, self.wiring.webhooks) if gates else None
        settings = PassSettings()
        passes = SchedulerPass(
            self.store, clock or SystemClock(), settings, lambda: 1, gates=readers
        )
        return passes.run()

    def add_revision(self, service: str, label: str, files: Mapping[str, str]) -> None:
        """`flotilla revision add` of a directory holding `files` (name -> text)."""
        directory = self.tmp / f"{service}-{label}"
        directory.mkdir()
        for name, text in files.items():
            (directory / name).write_text(text)
        self.cli.ok("revision", "add", service, str(directory), "--label", label)

    def add_revisions(self, service: str, *labels: str) -> None:
        """One web.service per label, each running something else."""
        for label in labels:
            unit = f"[Service]\nExecStart=/usr/bin/web {label}\n"
            self.add_revision(service, label, {"web.service": unit})

    def status(self, service: str) -> dict[str, Any]:
        """`flotilla rollout status SERVICE -o json`."""
        found: dict[str, Any] = json.loads(self.cli.ok("rollout", "status", service, "-o", "json"))
        return found


@contextmanager
def cli_world(prefix: str, tmp: Path) -> Iterator[CliWorld]:
    """A moto server with an environment named `prefix` and this process's id."""
    environment = f"{prefix}{os.getpid()}"
    with moto_server() as endpoint:
        create_environment_stack(environment, endpoint)
        settings = AwsSettings(environment=environment, region=REGION, endpoint_url=endpoint)
        yield CliWorld(Cli(endpoint, environment), Wiring(settings), tmp)
