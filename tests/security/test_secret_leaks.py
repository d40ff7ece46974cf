"""Issue 7, item 5: after a deploy, a secret environment value is nowhere it should not be.

A reduced demo scenario, as operators and instances run it: a moto server, the `flotilla`
CLI (subprocesses), a scheduler and two agents (processes, process runtime) deploying a
revision whose environment holds a secret, spans written as OTLP JSON, the trace exported
as HTML. Then the secret is looked for, raw and in base64 and hex, in:

- every DynamoDB item of the environment (a raw Scan through the API);
- every log line of the agents and the scheduler, and every span of the OTLP file;
- the output (stdout and stderr) of every CLI command run, including the read commands
  that show revisions, rollouts, history and traces, and the HTML trace page;
- every file under the scenario's directories (state, logs, units, spans, outputs);
- every process's command line and environment (/proc).

It may be only in the units' environment files, which must be mode 0600 and on tmpfs,
and in the environment of the units' own processes. The agents here keep their state
under /dev/shm (tmpfs), as production agents do under their default --state-dir,
/run/flotilla, which is tmpfs on systemd machines (asserted below).

Already proven elsewhere, not repeated: the secret never reaches a table item or a log
line of the engine on every store (tests/contract/test_secrets_never_stored.py), KMS
refuses a data key under another service's encryption context
(tests/contract/test_secret_box.py), and the worker role's kms:Decrypt is bound to its
own service's context (tests/unit/test_worker_policy.py); see test_kms_iam.py for what
moto's IAM simulation does and does not enforce.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flotilla.adapters.process_runtime import ProcessRuntime
from flotilla.cli.agent_command import agent as agent_command
from tests.support.agents import (
    AgentProcess,
    AwsWorld,
    aws_world,
    flotilla_cli,
    start_agent,
    start_scheduler,
    wait_for,
)
from tests.support.aws import dynamodb_client

INSTANCES = ("i-sec1", "i-sec2")
SERVICE = "vault"
UNIT = "[Unit]\nDescription=holds a secret\n[Service]\nExecStart=/bin/sleep 300\n"


def filesystem_type(path: Path) -> str:
    """The type of the filesystem `path` is on, from the longest matching mount point."""
    best, kind = "", "?"
    resolved = str(path.resolve())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        mount_point = left.split()[4].replace("\\040", " ")
        prefix = mount_point.rstrip("/") + "/"
        if (resolved + "/").startswith(prefix) and len(mount_point) >= len(best):
            best, kind = mount_point, right.split()[0]
    return kind


def tmpfs_directory() -> Path:
    for candidate in (Path("/dev/shm"), Path(f"/run/user/{os.getuid()}"), Path("/run")):
        writable = candidate.is_dir() and os.access(candidate, os.W_OK)
        if writable and filesystem_type(candidate) == "tmpfs":
            return candidate
    pytest.fail("no writable tmpfs (/dev/shm, /run/user/UID, /run) to keep the state on")


def forms_of(secret: str) -> dict[str, bytes]:
    raw = secret.encode()
    return {
        "raw": raw,
        "base64": base64.b64encode(raw).rstrip(b"="),
        "hex": raw.hex().encode(),
        "json-escaped": json.dumps(secret).encode()[1:-1],
    }


@dataclass
class Scenario:
    world: AwsWorld
    secret: str
    state: Path  # on tmpfs: the agents' state directories, logs and spans
    outputs: Path  # CLI inputs (revision files) and outputs (trace page)
    transcript: list[tuple[list[str], str]] = field(default_factory=list)
    processes: list[AgentProcess] = field(default_factory=list)
    # Every process's (pid, command line, environment) while agents and scheduler still ran.
    while_running: list[tuple[int, bytes, bytes]] = field(default_factory=list)

    def cli(self, *args: str) -> str:
        aws = ["--endpoint-url", self.world.endpoint, "--env", self.world.environment]
        result = flotilla_cli(self.world, *args, *aws)
        self.transcript.append(([*args], result.stdout + result.stderr))
        assert result.returncode == 0, result.stderr
        return result.stdout

    def leaks_in(self, data: bytes) -> list[str]:
        return [form for form, needle in forms_of(self.secret).items() if needle in data]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    secret = f"pw-{uuid.uuid4().hex}"
    state = tmpfs_directory() / f"flotilla-security-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    state.mkdir(mode=0o700)
    outputs = tmp_path_factory.mktemp("security")
    try:
        with aws_world(f"sec{os.getpid() % 100000}") as world:
            run = Scenario(world, secret, state, outputs)
            try:
                deploy(run)
                yield run
            finally:
                for process in run.processes:
                    process.kill()
                for instance_id in INSTANCES:
                    runtime = ProcessRuntime(state / instance_id / "process")
                    runtime.stop(runtime.owned_units())
    finally:
        shutil.rmtree(state, ignore_errors=True)


def deploy(run: Scenario) -> None:
    source = run.outputs / "revision"
    source.mkdir()
    (source / "vault.service").write_text(UNIT)
    (source / "vault.env").write_text(f"DB_PASSWORD='{run.secret}'\nPORT=8080\n")
    run.cli("service", "create", SERVICE, "--settle", "1", "--max-in-flight", "2")
    revision = run.cli("revision", "add", SERVICE, str(source), "--label", "v1").strip()
    run.processes.append(start_scheduler(run.world, run.state, "sched-1", interval=2))
    for instance_id in INSTANCES:
        run.processes.append(start_agent(run.world, run.state, SERVICE, instance_id))
    run.cli("weights", SERVICE, "v1=100")

    def converged() -> bool:
        instances = run.world.store.list_instances(SERVICE)
        return sorted(i.id for i in instances if i.current_revision == revision) == sorted(
            INSTANCES
        )

    wait_for(converged, 120, "both instances running v1")
    # Every read command an operator would run now, text and JSON.
    deploy_id = run.world.store.list_deploys(SERVICE)[0].id
    page = run.outputs / "trace.html"
    for command in (
        ["service", "show", SERVICE],
        ["service", "list", "-o", "json"],
        ["revision", "list", SERVICE, "-o", "json"],
        ["revision", "show", SERVICE, "v1", "--units"],
        ["revision", "show", SERVICE, "v1", "--units", "-o", "json"],
        ["rollout", "status", SERVICE],
        ["rollout", "status", SERVICE, "-o", "json"],
        ["history", SERVICE, "-o", "json"],
        ["trace", "rollout", SERVICE, "--color", "never"],
        ["trace", "rollout", SERVICE, "--html", str(page)],
        ["trace", "deploy", deploy_id, "--color", "never"],
        ["trace", "rollout", SERVICE, "--from-otlp", str(run.state / "spans.jsonl")],
    ):
        run.cli(*command)
    run.while_running = processes()
    for process in run.processes:  # SIGTERM: they flush their spans and log their exit
        assert process.terminate() == 0


def env_files(run: Scenario) -> list[Path]:
    return sorted(p for p in run.state.rglob("*") if p.is_file() and "env" in p.parent.parts)


def test_the_units_environment_files_hold_it_privately_on_tmpfs(scenario: Scenario) -> None:
    holding = [p for p in env_files(scenario) if scenario.leaks_in(p.read_bytes())]
    assert len(holding) == len(INSTANCES), env_files(scenario)
    for path in holding:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert filesystem_type(path) == "tmpfs", path


def test_the_agents_default_state_directory_is_under_run() -> None:
    """/run is tmpfs wherever systemd runs; the env files go to <state-dir>/env."""
    (default,) = [p.default for p in agent_command.params if p.name == "state_dir"]
    assert Path(str(default)).is_relative_to("/run")


def test_no_file_holds_it_but_the_environment_files(scenario: Scenario) -> None:
    expected = set(env_files(scenario))
    checked, leaks = 0, []
    for root in (scenario.state, scenario.outputs):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.parent == scenario.outputs / "revision":
                continue  # the operator's own input files
            checked += 1
            found = scenario.leaks_in(path.read_bytes())
            if found and path not in expected:
                leaks.append(f"{path} ({', '.join(found)})")
    assert leaks == []
    assert checked > 10  # logs, spans, unit files, state files, the trace page


def test_no_table_item_holds_it(scenario: Scenario) -> None:
    client = dynamodb_client(scenario.world.endpoint)
    prefix = f"flotilla-{scenario.world.environment}-"
    tables = [t for t in client.list_tables()["TableNames"] if t.startswith(prefix)]
    assert len(tables) >= 6
    items = 0
    for table in tables:
        for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
            for item in page["Items"]:
                items += 1
                assert scenario.leaks_in(repr(item).encode()) == [], (table, item.get("id"))
    assert items >= 5  # the service, the revision, two instances, two deploys, locks


def test_no_log_line_holds_it(scenario: Scenario) -> None:
    lines = 0
    for process in scenario.processes:
        for line in process.log.read_text().splitlines():
            lines += 1
            assert scenario.leaks_in(line.encode()) == [], (process.log.name, line)
    assert lines > 10


def test_no_span_holds_it(scenario: Scenario) -> None:
    spans = 0
    for line in (scenario.state / "spans.jsonl").read_text().splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                for span in scope["spans"]:
                    spans += 1
                    text = json.dumps(span).encode()
                    assert scenario.leaks_in(text) == [], span["name"]
    assert spans >= 10  # a deploy's transitions and its AWS calls, per instance


def test_no_cli_output_holds_it(scenario: Scenario) -> None:
    assert len(scenario.transcript) >= 15
    for command, output in scenario.transcript:
        assert scenario.leaks_in(output.encode()) == [], command
    shown = {" ".join(c): o for c, o in scenario.transcript}
    assert "DB_PASSWORD" in shown[f"revision show {SERVICE} v1 --units"]  # names, not values


def processes() -> list[tuple[int, bytes, bytes]]:
    """(pid, command line, environment) of every process we may read."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            environment = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        found.append((int(entry.name), command, environment))
    return found


def holders_of(scenario: Scenario, seen: list[tuple[int, bytes, bytes]]) -> list[str]:
    """Processes whose environment holds the secret; no command line may hold it."""
    holders = []
    for _pid, command, environment in seen:
        assert scenario.leaks_in(command) == [], command
        if scenario.leaks_in(environment):
            assert f"DB_PASSWORD={scenario.secret}".encode() in environment.split(b"\0")
            holders.append(command.replace(b"\0", b" ").decode().strip())
    return holders


def test_only_the_units_processes_hold_it_in_their_environment(scenario: Scenario) -> None:
    """No command line anywhere; in an environment only the unit's own process (not the
    agent or scheduler while they ran, not the unit's supervisor)."""
    # Agents and scheduler were alive when the first look was taken.
    assert {p.process.pid for p in scenario.processes} <= {
        pid for pid, _, _ in scenario.while_running
    }
    units = ["/bin/sleep 300"] * len(INSTANCES)
    assert holders_of(scenario, scenario.while_running) == units
    # The secret reached both units (so the checks above looked for something real).
    assert holders_of(scenario, processes()) == units
