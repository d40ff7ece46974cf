"""The health probe contract (`HealthProbe`, engine/ports.py), run against `LocalHealthProbe`
with real servers on loopback and real commands.

HTTP(S) passes on 2xx and 3xx (a redirect is not followed), fails on anything else, on a
refused connection and on silence past the timeout; TCP passes once a connection is
accepted; a command passes on exit status 0 and is killed, with what it started, at its
timeout. Nothing a probe sees beyond a status reaches its result: not a body, not a
command's output. There is no in-memory probe: the engine's tests probe real servers too
(tests/unit/test_probe_deploys.py); a fake would have to pass this suite.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from flotilla.adapters.health_probe import LocalHealthProbe
from flotilla.engine.ports import HealthProbe, ProbeTarget
from tests.support.probe_servers import closed_port, http_server, silent_listener

TIMEOUT = timedelta(seconds=5)
SHORT = timedelta(seconds=0.3)


@pytest.fixture(params=["local"])
def probe(request: pytest.FixtureRequest) -> HealthProbe:
    return {"local": LocalHealthProbe}[request.param]()


def http(port: int, path: str = "/health", kind: str = "http") -> ProbeTarget:
    return ProbeTarget(kind=kind, port=port, path=path)


@pytest.mark.parametrize("status", [200, 204, 301, 302, 399])
def test_http_passes_on_2xx_and_3xx(probe: HealthProbe, status: int) -> None:
    with http_server([status]) as (port, script):
        result = probe.check(http(port, "/health?deep=1"), timeout=TIMEOUT)
    assert result.passed
    assert result.detail == f"HTTP {status}"
    assert script.paths == ["/health?deep=1"]  # the path as given, redirect not followed


@pytest.mark.parametrize("status", [404, 500, 503])
def test_http_fails_on_anything_else_saying_the_status_only(
    probe: HealthProbe, status: int
) -> None:
    with http_server([status]) as (port, _script):
        result = probe.check(http(port), timeout=TIMEOUT)
    assert not result.passed
    assert result.detail == f"HTTP {status}"


def test_https_passes_with_a_self_signed_certificate_as_a_load_balancer_does(
    probe: HealthProbe, tmp_path: Path
) -> None:
    with http_server([200], tls_dir=tmp_path) as (port, script):
        assert probe.check(http(port, kind="https"), timeout=TIMEOUT).passed
        # The same server spoken to in plain HTTP is no answer at all.
        plain = probe.check(http(port), timeout=TIMEOUT)
    assert not plain.passed
    assert script.paths == ["/health"]


def test_a_refused_connection_fails_for_http_and_tcp(probe: HealthProbe) -> None:
    port = closed_port()
    for target in (http(port), ProbeTarget(kind="tcp", port=port)):
        result = probe.check(target, timeout=TIMEOUT)
        assert (result.passed, result.detail) == (False, "connection refused")


def test_silence_past_the_timeout_fails(probe: HealthProbe) -> None:
    with silent_listener() as port:
        result = probe.check(http(port), timeout=SHORT)
    assert (result.passed, result.detail) == (False, "no answer within 0.3 s")


def test_tcp_passes_once_a_connection_is_accepted(probe: HealthProbe) -> None:
    with silent_listener() as port:
        result = probe.check(ProbeTarget(kind="tcp", port=port), timeout=TIMEOUT)
    assert result.passed


@pytest.mark.parametrize(
    ("command", "passed", "detail"),
    [
        ("true", True, "exit status 0"),
        ("exit 3", False, "exit status 3"),
        ("kill -TERM $$", False, "killed by signal 15"),
    ],
)
def test_a_command_passes_on_exit_status_zero(
    probe: HealthProbe, command: str, passed: bool, detail: str
) -> None:
    result = probe.check(ProbeTarget(kind="command", command=command), timeout=TIMEOUT)
    assert (result.passed, result.detail) == (passed, detail)


def test_a_command_output_is_never_reported(probe: HealthProbe) -> None:
    target = ProbeTarget(kind="command", command="echo s3cr3t-out; echo s3cr3t-err >&2; exit 1")
    result = probe.check(target, timeout=TIMEOUT)
    assert (result.passed, result.detail) == (False, "exit status 1")
    assert "s3cr3t" not in target.describe()


def test_a_command_gets_none_of_the_agent_environment(
    probe: HealthProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "agent-only")
    target = ProbeTarget(kind="command", command='test -z "$AWS_SECRET_ACCESS_KEY"')
    assert probe.check(target, timeout=TIMEOUT).passed


def test_a_hanging_command_is_killed_at_its_timeout_with_what_it_started(
    probe: HealthProbe, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    command = f"sleep 300 & echo $! > {pids}; sleep 300"
    # Long enough for the shell to note its child's pid, however busy the machine.
    result = probe.check(ProbeTarget(kind="command", command=command), timeout=timedelta(seconds=2))
    assert (result.passed, result.detail) == (False, "no exit within 2 s (killed)")
    background = int(pids.read_text())
    for _ in range(100):  # reaped by init: gone once it is no longer a zombie
        if not _alive(background):
            break
        time.sleep(0.05)
    assert not _alive(background)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_the_description_names_what_is_probed_and_never_a_command(probe: HealthProbe) -> None:
    assert http(8080).describe() == "http://127.0.0.1:8080/health"
    assert ProbeTarget(kind="tcp", port=9000).describe() == "tcp://127.0.0.1:9000"
    assert ProbeTarget(kind="command", command="curl -H 'x: y'").describe() == "the health command"
    assert os.path.exists("/bin/sh")  # the command probe's shell, on every supported system
