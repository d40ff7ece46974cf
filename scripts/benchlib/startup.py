"""Start-up of the `flotilla` command: `flotilla --help`, `flotilla keys --help`, and
`flotilla keys alice` (what sshd runs as its AuthorizedKeysCommand at every SSH login)
answering from a moto server: asked of the agent's keys socket (a `KeysServer` in this
process, reading the moto server as an agent does), as on a worker whose agent runs, and
reading the users table itself, as when no agent answers.

Each figure is the wall time of one whole process, as the console script of this
virtualenv runs it with an instance's settings in its environment (FLOTILLA_ENV, the
region, FLOTILLA_SERVICE, the endpoint): interpreter start, imports, and for `keys alice`
the boto3 session and DynamoDB client and one GetItem on moto. Two reference figures show
the floor under them: the interpreter alone, and the interpreter importing boto3 alone.
Each command runs once before it is timed, so every run finds its .pyc files cached.
"""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib.figures import Figure, seconds_of
from flotilla.cli.demo.emulator import REGION, client_environment
from flotilla.cli.keys_socket import KeysServer, bound_listener
from flotilla.cli.wiring import AwsSettings, Wiring
from testbed.aws import create_environment_stack, moto_server

TARGET = "≤ 0.15 s"
ENVIRONMENT = "startup"
SERVICE = "web"
FLOTILLA = str(Path(sys.executable).with_name("flotilla"))  # the console script a user runs


def public_key_line(comment: str) -> str:
    """An ssh-ed25519 public key line (a random key: only its format matters here)."""

    def string(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    blob = string(b"ssh-ed25519") + string(os.urandom(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode('ascii')} {comment}"


def timed(argv: list[str], env: dict[str, str], expect: str) -> float:
    """Seconds one run of `argv` takes; it must succeed and print `expect`."""
    took, ran = seconds_of(
        lambda: subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    )
    if ran.returncode != 0 or expect not in ran.stdout:
        raise RuntimeError(f"{' '.join(argv[1:])} failed: {ran.stderr[-1000:] or ran.stdout}")
    return float(took)


def run(runs: int, quick: bool) -> list[Figure]:
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as work:
        env = {**client_environment(endpoint, ENVIRONMENT), "FLOTILLA_SERVICE": SERVICE}
        create_environment_stack(ENVIRONMENT, endpoint)
        key = public_key_line("alice@bench")
        (Path(work) / "alice.pub").write_text(key + "\n", encoding="utf-8")
        # A user is given access to services that exist only.
        created = subprocess.run(
            [FLOTILLA, "service", "create", SERVICE],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"service create failed: {created.stderr[-1000:]}")
        added = subprocess.run(
            [FLOTILLA, "user", "add", "alice", "--key", str(Path(work) / "alice.pub"),
             "--service", SERVICE],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if added.returncode != 0:
            raise RuntimeError(f"user add failed: {added.stderr[-1000:]}")
        socket_path = Path(work) / "keys.sock"
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the agent's, here
            os.environ.setdefault(variable, env[variable])
        settings = AwsSettings(environment=ENVIRONMENT, region=REGION, endpoint_url=endpoint)
        server = KeysServer(bound_listener(socket_path), Wiring(settings).users)
        server.start()
        commands = {
            "`flotilla --help`": ([FLOTILLA, "--help"], "keys"),
            "`flotilla keys --help`": ([FLOTILLA, "keys", "--help"], "AuthorizedKeysCommand"),
            "`flotilla keys alice`, the agent answering": (
                [FLOTILLA, "keys", "--socket", str(socket_path), "alice"], key),
            "`flotilla keys alice`, no agent: read directly": (
                [FLOTILLA, "keys", "--socket", str(Path(work) / "none.sock"), "alice"], key),
        }  # fmt: skip
        references = {
            "  reference: the interpreter alone": ([sys.executable, "-c", "pass"], ""),
            "  reference: the interpreter importing boto3 alone": (
                [sys.executable, "-c", "import boto3"], ""),
        }  # fmt: skip
        samples: dict[str, list[float]] = {name: [] for name in {**commands, **references}}
        for argv, expect in {**commands, **references}.values():
            timed(argv, env, expect)  # warm: .pyc files written, pages cached
        for _ in range(runs):  # interleaved, so that a burst of load hits every figure
            for name, (argv, expect) in {**commands, **references}.items():
                samples[name].append(timed(argv, env, expect))
        server.close()
    notes = {
        "`flotilla --help`": "no command module imported",
        "`flotilla keys --help`": "imports the keys command, not boto3",
        "`flotilla keys alice`, the agent answering": "no boto3: the agent's socket, its 1 GetItem",
        "`flotilla keys alice`, no agent: read directly": (
            "boto3, a DynamoDB client, 1 GetItem on a moto server"
        ),
        "  reference: the interpreter alone": "python -c pass",
        "  reference: the interpreter importing boto3 alone": "python -c 'import boto3'",
    }
    return [
        Figure("startup", name, "s", samples[name], notes[name],
               target=TARGET if name in commands else "")
        for name in samples
    ]  # fmt: skip
