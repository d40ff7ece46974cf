"""The agent's health probe on its own instance: HTTP(S) and TCP on loopback, or a command.

The real `HealthProbe` (engine/ports.py): the standard library only (http.client, socket,
subprocess). What it reports is a few words about what it saw, never an answer's body or
a command's output: those can hold secrets, and the result reaches the deploy's history.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import ssl
import subprocess
from datetime import timedelta

from flotilla.engine.ports import ProbeResult, ProbeTarget

LOOPBACK = "127.0.0.1"
# A command gets a bare environment: the agent's own (AWS settings, OpenTelemetry
# endpoints) is none of its business.
_COMMAND_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LocalHealthProbe:
    """Probes on this machine (`HealthProbe`)."""

    def check(self, target: ProbeTarget, *, timeout: timedelta) -> ProbeResult:
        seconds = timeout.total_seconds()
        if target.kind == "command":
            return _run(target.command or "", seconds)
        if target.port is None:
            raise ValueError(f"a {target.kind} probe needs a port")
        if target.kind == "tcp":
            return _connect(target.port, seconds)
        if target.kind in ("http", "https"):
            return _get(target.kind, target.port, target.path or "/", seconds)
        raise ValueError(f"unknown probe kind {target.kind!r}")


def _failure(error: OSError, seconds: float) -> ProbeResult:
    if isinstance(error, TimeoutError | socket.timeout):
        return ProbeResult(False, f"no answer within {seconds:g} s")
    if isinstance(error, ConnectionRefusedError):
        return ProbeResult(False, "connection refused")
    if isinstance(error, ssl.SSLError):
        return ProbeResult(False, f"TLS failed: {error.reason or 'handshake'}")
    return ProbeResult(False, type(error).__name__)  # the class only: no peer's words


def _connect(port: int, seconds: float) -> ProbeResult:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=seconds):
            return ProbeResult(True, "connection accepted")
    except OSError as error:
        return _failure(error, seconds)


def _get(kind: str, port: int, path: str, seconds: float) -> ProbeResult:
    connection: http.client.HTTPConnection
    if kind == "https":
        # As a load balancer does: the certificate of the instance's own server is not checked.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(LOOPBACK, port, timeout=seconds, context=context)
    else:
        connection = http.client.HTTPConnection(LOOPBACK, port, timeout=seconds)
    try:
        connection.request("GET", path, headers={"User-Agent": "flotilla-health-probe"})
        status = connection.getresponse().status
    except http.client.HTTPException as error:
        return ProbeResult(False, f"not an HTTP answer ({type(error).__name__})")
    except OSError as error:
        return _failure(error, seconds)
    finally:
        connection.close()
    return ProbeResult(200 <= status < 400, f"HTTP {status}")


def _run(command: str, seconds: float) -> ProbeResult:
    process = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        env={"PATH": _COMMAND_PATH},
        start_new_session=True,  # its own process group: a timeout kills all it started
    )
    try:
        code = process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        return ProbeResult(False, f"no exit within {seconds:g} s (killed)")
    finally:
        _kill_group(process)  # anything it left in the background
    if code < 0:
        return ProbeResult(False, f"killed by signal {-code}")
    return ProbeResult(code == 0, f"exit status {code}")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
