"""`flotilla agent` and `flotilla scheduler` at start-up, as processes: a typo in --service
is refused before the instance registers, and AWS that cannot be reached yet is retried
with back-off, every attempt logged, until it answers or SIGTERM arrives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agents import FLOTILLA
from tests.support.aws import (
    REGION,
    create_environment_stack,
    dynamodb_client,
    free_port,
    moto_server,
)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        create_environment_stack("daemons", url)
        yield url


def _environment() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("FLOTILLA_", "AWS_"))}
    return {**keep, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}


def _agent(endpoint: str, service: str, tmp_path: Path) -> list[str]:
    return [
        FLOTILLA, "agent", "--service", service, "--instance-id", "i-typo",
        "--runtime", "process", "--state-dir", str(tmp_path / "state"),
        "--env", "daemons", "--region", REGION, "--endpoint-url", endpoint,
    ]  # fmt: skip


def test_an_agent_for_a_service_that_does_not_exist_stops_before_registering(
    endpoint: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        _agent(endpoint, "nosuch", tmp_path),
        capture_output=True, text=True, timeout=120, env=_environment(), check=False,
    )  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: service 'nosuch' does not exist in environment 'daemons'")
    assert "Traceback" not in done.stderr
    items = dynamodb_client(endpoint).scan(TableName="flotilla-daemons-instances")["Items"]
    assert items == []  # it never registered


@pytest.mark.parametrize("daemon", ["agent", "scheduler"])
def test_unreachable_aws_at_start_is_retried_with_each_attempt_logged(
    daemon: str, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    scheduler = [FLOTILLA, "scheduler", "--env", "daemons", "--region", REGION,
                 "--endpoint-url", closed]  # fmt: skip
    command = _agent(closed, "api", tmp_path) if daemon == "agent" else scheduler
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_environment()
    )
    assert process.stderr is not None
    attempts: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while len(attempts) < 2 and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            message = json.loads(line).get("message", "") if line.startswith("{") else line
            if "failed (attempt" in message:
                attempts.append(message)
        assert process.poll() is None, "it gave up at once"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        process.stderr.close()
    assert len(attempts) == 2, attempts
    assert "(attempt 1 of 8)" in attempts[0]
    assert "(attempt 2 of 8)" in attempts[1]
    assert "cannot reach" in attempts[0]
    assert "trying again with back-off" in attempts[0]
    assert code == 0  # SIGTERM during the back-off: a clean stop
