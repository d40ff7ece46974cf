"""Real `flotilla agent` and `flotilla scheduler` processes against a moto server, for
the crash and integration tests and the fleet benchmarks; and the operator's CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.adapters.state_dir import MEMORY_FILESYSTEMS, filesystem_type
from flotilla.adapters.templates import create_tables
from flotilla.cli.wiring import AwsSettings, Wiring
from testbed.aws import REGION, create_environment_stack, dynamodb_client, moto_server
from testbed.aws import dynamodb_local as local_dynamodb

FLOTILLA = str(Path(sys.executable).parent / "flotilla")


@dataclass
class AwsWorld:
    """An environment on a moto server, reachable from this process and from agents.

    This process's adapters come from the composition root, built from the settings the
    agents get through their environment."""

    endpoint: str
    environment: str
    # Amazon's DynamoDB Local for the tables, the moto server for the rest: botocore's own
    # per-service endpoint (AWS_ENDPOINT_URL_DYNAMODB), as an operator would point it.
    dynamodb_endpoint: str | None = None

    def __post_init__(self) -> None:
        self.wiring = Wiring(AwsSettings(self.environment, REGION, None, self.endpoint))
        if self.dynamodb_endpoint is not None:
            # This process's own adapters: its wiring's DynamoDB client, on DynamoDB Local.
            self.wiring.__dict__["dynamodb"] = dynamodb_client(self.dynamodb_endpoint)
        self.clock = self.wiring.clock
        self.tables = self.wiring.tables
        self.store = self.wiring.store
        self.locks = self.wiring.locks
        self.secrets = self.wiring.secret_box()

    def agent_environment(self) -> dict[str, str]:
        base = {**os.environ, "FLOTILLA_ENV": self.environment, "AWS_REGION": REGION}
        if self.dynamodb_endpoint is None:
            return {**base, "FLOTILLA_ENDPOINT_URL": self.endpoint}
        # FLOTILLA_ENDPOINT_URL would name one endpoint for every service: leave the
        # choice to botocore, which prefers a service's own variable to the general one.
        return {
            **base,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_endpoint,
        }


@contextmanager
def aws_world(environment: str, *, dynamodb_local: bool = False) -> Iterator[AwsWorld]:
    """An environment's stack on a moto server; with `dynamodb_local`, its tables (made
    from the same template) on Amazon's DynamoDB Local instead."""
    with moto_server() as endpoint:
        create_environment_stack(environment, endpoint)
        if not dynamodb_local:
            yield AwsWorld(endpoint, environment)
            return
        with local_dynamodb() as tables_endpoint:
            create_tables(dynamodb_client(tables_endpoint), environment)
            yield AwsWorld(endpoint, environment, tables_endpoint)


@dataclass
class AgentProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                lines.append({"raw": raw})
        return lines


def start_agent(
    world: AwsWorld,
    work: Path,
    service: str,
    instance_id: str,
    *,
    fault: str | None = None,
    runtime: list[str] | None = None,
    cli_defaults: bool = False,
) -> AgentProcess:
    """An agent process; `runtime` gives its runtime options (default: the process runtime).

    Tests poll fast and hold their instance briefly (`--poll-interval 0.3`,
    `--agent-lease-seconds 3`) so nothing waits on timers; with `cli_defaults` the agent
    runs with `flotilla agent`'s own (a 60 s safety-net poll, a 9-minute hold), as the
    benchmarks measure it: wake-ups and proven-dead predecessors must do the rest."""
    env = world.agent_environment()
    env.pop("FLOTILLA_FAULT_KILL_AT", None)
    if fault:
        env["FLOTILLA_FAULT_KILL_AT"] = fault
    log = work / f"agent-{instance_id}-{time.time_ns()}.log"
    command = [
        FLOTILLA, "agent",
        "--service", service,
        "--instance-id", instance_id,
        "--state-dir", str(work / instance_id),
        *_allow_disk(work),
        *([] if cli_defaults else ["--poll-interval", "0.3", "--agent-lease-seconds", "3"]),
        "--lease-seconds", "20",
        "--trace-file", str(work / "spans.jsonl"),
        *(runtime or ["--runtime", "process"]),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    return AgentProcess(process, log)


def _allow_disk(work: Path) -> list[str]:
    """Tests keep agents' state in their work directory: on a disk, allowed explicitly (the
    agent refuses it otherwise); on a tmpfs (/dev/shm), checked as in production."""
    on_tmpfs = filesystem_type(work) in MEMORY_FILESYSTEMS
    return [] if on_tmpfs else ["--allow-disk-state-dir"]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_scheduler(
    world: AwsWorld, work: Path, owner: str, *, interval: float = 600, lease: float = 4
) -> AgentProcess:
    """A `flotilla scheduler` process. The long default interval means that, after its
    first full pass, only SQS events make it act: tests see the wake-ups work."""
    log = work / f"scheduler-{owner}-{time.time_ns()}.log"
    command = [
        FLOTILLA, "scheduler",
        "--owner", owner,
        "--interval", str(interval),
        "--lease-seconds", str(lease),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=world.agent_environment(), stdout=out, stderr=subprocess.STDOUT
        )
    return AgentProcess(process, log)


def flotilla_cli(world: AwsWorld, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run one `flotilla` command against the world, as an operator would."""
    return subprocess.run(
        [FLOTILLA, *arguments],
        env=world.agent_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
