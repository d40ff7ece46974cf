"""The demo's AWS: moto in server mode on a loopback port, in its own process, with each
DynamoDB request applied atomically as DynamoDB applies it (`atomic_moto`).

Every other process of the demo (scheduler, agents, CLI commands) reaches it through
`FLOTILLA_ENDPOINT_URL`, exactly as they would reach AWS, with throwaway credentials
that only this emulator accepts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flotilla.engine.errors import ConfigurationError

REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def embedded_aws(log: Path | None = None, timeout: float = 30) -> Iterator[str]:
    """Start moto's server (its output to `log`, or nowhere); yield its endpoint URL; stop
    it on the way out. The tests use it too."""
    try:
        import moto.server  # noqa: F401 -- only checks that the demo extra is installed
    except ImportError as exc:
        raise ConfigurationError(
            "the demo needs moto's server: pip install 'flotilla[demo]' (./scripts/demo does)"
        ) from exc
    port = _free_port()
    with log.open("ab") if log is not None else open(os.devnull, "wb") as out:
        process = subprocess.Popen(
            # moto's server, each DynamoDB request made atomic as in AWS (atomic_moto.py).
            [
                sys.executable,
                "-m",
                "flotilla.cli.demo.atomic_moto",
                "-H",
                "127.0.0.1",
                "-p",
                f"{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the embedded AWS emulator did not start (see {log or 'its output'})"
                )
            time.sleep(0.05)
        time.sleep(0.3)
        if process.poll() is not None:  # another process took the port first; ours exited
            raise ConfigurationError(f"the embedded AWS emulator could not bind port {port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def client_environment(endpoint: str, environment: str) -> dict[str, str]:
    """What every demo process gets: the emulator's endpoint and throwaway credentials."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLOTILLA_"))}
    return {
        **keep,
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",  # the emulator accepts any
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "FLOTILLA_ENDPOINT_URL": endpoint,
        "FLOTILLA_ENV": environment,
    }
