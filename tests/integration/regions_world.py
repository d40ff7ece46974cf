"""Three regions on one moto server, for the tests of commands over several regions.

moto keeps its regions apart on one server; each region's endpoint, as the CLI sees it,
is a proxy of its own (`FLOTILLA_ENDPOINT_URLS`), so one region can go dark while the
others answer. Each region has its own environment stack, scheduler passes and fake
agents (`Fleet`, a thread), reached directly rather than through the proxies: a region
the operator cannot reach goes on with its own rollout, as a real one does. The CLI runs
as an operator runs it, in a process of its own that a test may kill.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from flotilla.cli.wiring import AwsSettings, Wiring
from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.clock import SystemClock
from flotilla.engine.records import WavePlan
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from tests.support.agents import FLOTILLA
from tests.support.aws import create_environment_stack, moto_server
from tests.support.cli import Cli
from tests.support.faults import EndpointProxy
from tests.support.scheduler_world import FakeAgents, register

A, B, C = "eu-west-1", "us-east-1", "ap-southeast-2"
REGIONS = (A, B, C)
WAVES = ",".join(REGIONS)
# Minutes, never reached: a test that hangs fails with the command's output instead.
PATIENCE = 180.0


@dataclass
class Fleet:
    """Each region's scheduler and agents, stepping every 0.2 s in a thread. `failing`
    names (region, service, label) whose deploys fail; `held` regions make no progress."""

    wirings: dict[str, Wiring]
    failing: set[tuple[str, str, str]] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _stepping: threading.Lock = field(default_factory=threading.Lock)
    _quiet: bool = False
    errors: list[BaseException] = field(default_factory=list)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """No region steps while inside (a step under way is finished first), so that
        what the tables hold changes only by what the test does."""
        with self._stepping:
            self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def _fails(self, region: str) -> Callable[[DeployCheckpoint], bool]:
        store = self.wirings[region].store

        def fails(deploy: DeployCheckpoint) -> bool:
            if deploy.to_revision is None:
                return False
            label = store.get_revision(deploy.service, deploy.to_revision).label
            return (region, deploy.service, label) in self.failing

        return fails

    def _run(self) -> None:
        clock = SystemClock()
        while not self._stop.wait(0.2):
            with self._stepping:
                if not self._quiet:
                    self._step(clock)

    def _step(self, clock: SystemClock) -> None:
        for region, wiring in self.wirings.items():
            if region in self.held:
                continue
            try:
                SchedulerPass(wiring.store, clock, PassSettings(), lambda: 1).run()
                for service in sorted(self.services):
                    FakeAgents(wiring.store, clock, service, fails=self._fails(region)).settle()
            except Exception as exc:  # surfaced by the tests, not swallowed
                self.errors.append(exc)


@dataclass
class World:
    cli: Cli
    endpoints: dict[str, str]  # region -> the CLI's endpoint (its proxy)
    proxies: dict[str, EndpointProxy]
    wirings: dict[str, Wiring]  # direct, as each region's own scheduler reaches it
    fleet: Fleet
    tmp: Path

    @property
    def variables(self) -> dict[str, str]:
        pairs = ",".join(f"{region}={url}" for region, url in self.endpoints.items())
        return {"FLOTILLA_ENDPOINT_URLS": pairs}

    def run(self, *args: str, timeout: float = PATIENCE) -> subprocess.CompletedProcess[str]:
        return self.cli.run(*args, env=self.variables, timeout=timeout)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """`flotilla ARGS` in the background, with the home region as the entry."""
        variables = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FLOTILLA_") and k not in ("AWS_REGION", "AWS_DEFAULT_REGION")
        }
        aws = ["--endpoint-url", self.cli.endpoint, "--env", self.cli.environment, "--region", A]
        return subprocess.Popen(
            [FLOTILLA, *args, *aws],
            env={**variables, **self.variables},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def service(self, name: str, *labels: str, instances: int = 2) -> None:
        """`name` in the three regions, home A, with a revision per label and instances."""
        regions = [arg for region in REGIONS for arg in ("--region", region)]
        self.cli.ok("service", "create", name, *regions, env=self.variables, with_region=False)
        for label in labels:
            directory = self.tmp / f"{name}-{label}"
            directory.mkdir()
            (directory / "web.service").write_text(f"[Service]\nExecStart=/usr/bin/web {label}\n")
            (directory / "web.env").write_text(f"LABEL={label}\n")
            self.ok("revision", "add", name, str(directory), "--label", label, "--region", A)
        clock = SystemClock()
        for wiring in self.wirings.values():
            register(wiring.store, clock, name, instances, prefix=f"{name}-i")
        self.fleet.services.add(name)

    def plan(self, name: str) -> WavePlan:
        plan = self.wirings[A].store.get_service(name).waves
        assert plan is not None
        return plan

    def weights(self, region: str, name: str) -> dict[str, int]:
        """Label -> weight in `region`."""
        store = self.wirings[region].store
        labels = {r.id: r.label for r in store.list_revisions(name)}
        return {labels[r]: w for r, w in store.get_service(name).weights.items()}

    def running(self, region: str, name: str) -> set[str | None]:
        """The labels the instances of `name` in `region` run."""
        store = self.wirings[region].store
        labels = {r.id: r.label for r in store.list_revisions(name)}
        return {labels.get(i.current_revision or "") for i in store.list_instances(name)}

    @contextmanager
    def unchanged(self) -> Iterator[None]:
        """Every table of every region is as it was once the block ends; the fleet is
        quiet meanwhile, so only what the block did could have changed them."""
        with self.fleet.quiet():
            before = self.snapshot()
            yield
            assert self.snapshot() == before

    def snapshot(self) -> dict[str, Any]:
        scans: dict[str, Any] = {}
        for region in REGIONS:
            client = boto3.client("dynamodb", region_name=region, endpoint_url=self.cli.endpoint)
            prefix = f"flotilla-{self.cli.environment}-"
            for table in client.list_tables()["TableNames"]:
                if table.startswith(prefix):
                    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
                    scans[f"{region}/{table}"] = sorted(
                        json.dumps(i, sort_keys=True, default=repr) for i in items
                    )
        return scans


def wait_for(what: str, check: Callable[[], bool], timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


@contextmanager
def regions_world(prefix: str, tmp: Path) -> Iterator[World]:
    """Three regions on one moto server, each with its stack, proxy and fleet."""
    environment = f"{prefix}{os.getpid()}"
    with moto_server() as endpoint:
        port = urllib.parse.urlsplit(endpoint).port
        assert port is not None
        for region in REGIONS:
            create_environment_stack(environment, endpoint, region=region)
        proxies = {region: EndpointProxy(port) for region in REGIONS}
        wirings = {
            region: Wiring(
                AwsSettings(environment=environment, region=region, endpoint_url=endpoint)
            )
            for region in REGIONS
        }
        fleet = Fleet(wirings)
        fleet.start()
        try:
            yield World(
                Cli(endpoint, environment),
                {region: proxy.endpoint for region, proxy in proxies.items()},
                proxies,
                wirings,
                fleet,
                tmp,
            )
        finally:
            fleet.stop()
            for proxy in proxies.values():
                proxy.down()
        assert not fleet.errors, fleet.errors
