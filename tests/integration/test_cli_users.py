"""`flotilla user …` and `flotilla keys`, as an operator and sshd run them, on a moto server.

Bad input must print one line (no traceback), exit non-zero and change no table;
`keys` must print only valid key lines, nothing (exit 0) for an unknown user, and
nothing with a non-zero exit when the users cannot be read, so that sshd fails closed.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from flotilla.engine import users
from tests.support.agents import FLOTILLA
from tests.support.aws import create_environment_stack, dynamodb_client, moto_server
from tests.support.cli import Cli as BaseCli


def new_key(comment: str) -> tuple[str, str]:
    """A fresh (public key line, private key PEM) pair."""
    private = ed25519.Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return f"{public.decode()} {comment}", pem.decode()


class Cli(BaseCli):
    def users_table(self) -> list[dict[str, Any]]:
        client = dynamodb_client(self.endpoint)
        table = f"flotilla-{self.environment}-users"
        found = client.scan(TableName=table, ConsistentRead=True)["Items"]
        return sorted(found, key=lambda item: item["name"]["S"])

    def keys(self, *args: str, **kw: Any) -> list[str]:
        """`flotilla keys …`, checking that every printed line is a valid key line."""
        lines = self.ok("keys", *args, **kw).splitlines()
        for line in lines:
            assert users.public_key(line).line == line
        return lines


@pytest.fixture(scope="module")
def cli() -> Iterator[Cli]:
    environment = f"usr{os.getpid()}"
    with moto_server() as endpoint:
        create_environment_stack(environment, endpoint)
        cli = Cli(endpoint, environment)
        for service in ("api", "web"):  # access is granted only to services that exist
            cli.ok("service", "create", service)
        yield cli


def assert_refused(cli: Cli, *args: str, code: int = 2, **kw: Any) -> str:
    before = cli.users_table()
    result = cli.run(*args, **kw)
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert cli.users_table() == before
    return lines[0]


def test_add_list_and_remove(cli: Cli, tmp_path: Path) -> None:
    first, _ = new_key("alice@laptop")
    second, _ = new_key("alice@desktop")
    (tmp_path / "alice.pub").write_text(f"# alice's keys\n{first}\n")
    added = json.loads(
        cli.ok(
            "user", "add", "alice", "--key", str(tmp_path / "alice.pub"), "--service", "api",
            "-o", "json",
        )
    )  # fmt: skip
    assert added["version"] == 1
    assert added["keys"] == [
        {"type": "ssh-ed25519", "fingerprint": users.fingerprint(first), "comment": "alice@laptop"}
    ]
    # Adding what is there already changes nothing; adding more appends.
    again = json.loads(
        cli.ok("user", "add", "alice", "--key", str(tmp_path / "alice.pub"), "-o", "json")
    )
    assert again["version"] == 1
    more = json.loads(
        cli.ok(
            "user", "add", "alice", "--key", "-", "--service", "web", "--service", "api",
            "-o", "json", stdin=second + "\n",
        )
    )  # fmt: skip
    assert more["version"] == 2
    assert more["services"] == ["api", "web"]
    assert [k["fingerprint"] for k in more["keys"]] == [
        users.fingerprint(first),
        users.fingerprint(second),
    ]
    listed = cli.ok("user", "list")
    assert users.fingerprint(second) in listed
    assert "alice@desktop" in listed
    for line in (first, second):
        assert line.split()[1] not in listed  # fingerprints only, never whole keys
    assert line.split()[1] not in cli.ok("user", "list", "-o", "json")

    after = json.loads(
        cli.ok(
            "user", "remove", "alice", "--key", users.fingerprint(first), "--service", "web",
            "-o", "json",
        )
    )  # fmt: skip
    assert [k["fingerprint"] for k in after["keys"]] == [users.fingerprint(second)]
    assert after["services"] == ["api"]
    assert "removed user alice" in cli.ok("user", "remove", "alice")
    assert "alice" not in [u["name"] for u in json.loads(cli.ok("user", "list", "-o", "json"))]


@pytest.fixture(scope="module")
def team(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """dana (api), erik (web), root (admin), fay (api, deactivated): their key lines."""
    directory = tmp_path_factory.mktemp("team")
    lines = {}
    for name, options in {
        "dana": ["--service", "api"],
        "erik": ["--service", "web"],
        "root": ["--admin"],
        "fay": ["--service", "api"],
    }.items():
        lines[name], _ = new_key(f"{name}@example")
        (directory / f"{name}.pub").write_text(lines[name] + "\n")
        cli.ok("user", "add", name, "--key", str(directory / f"{name}.pub"), *options)
    listed = json.loads(cli.ok("user", "deactivate", "fay", "-o", "json"))
    assert listed["active"] is False
    return lines


def test_keys_prints_the_active_users_allowed_on_the_service(
    cli: Cli, team: dict[str, str]
) -> None:
    assert sorted(cli.keys("--service", "api")) == sorted([team["dana"], team["root"]])
    assert sorted(cli.keys("--service", "web")) == sorted([team["erik"], team["root"]])
    assert cli.keys() == [team["root"]]  # without a service, only admins
    assert cli.keys(env={"FLOTILLA_SERVICE": "web"}) == cli.keys("--service", "web")


def test_keys_for_one_user_as_sshd_asks(cli: Cli, team: dict[str, str]) -> None:
    assert cli.keys("--service", "api", "dana") == [team["dana"]]
    assert cli.keys("--service", "web", "dana") == []
    assert cli.keys("--service", "web", "root") == [team["root"]]
    assert cli.keys("--service", "api", "fay") == []  # deactivated
    cli.ok("user", "activate", "fay")
    try:
        assert cli.keys("--service", "api", "fay") == [team["fay"]]
    finally:
        cli.ok("user", "deactivate", "fay")


def test_the_shared_login_gets_every_allowed_users_keys_as_sshd_asks(
    cli: Cli, team: dict[str, str]
) -> None:
    shared = ["--shared-login", "ops", "--service", "api", "--"]
    assert sorted(cli.keys(*shared, "ops")) == sorted([team["dana"], team["root"]])
    assert cli.keys(*shared, "dana") == [team["dana"]]  # a user's own account still works
    assert cli.keys(*shared, "erik") == []  # a user of another service
    assert cli.keys(*shared, "fay") == []  # deactivated
    assert cli.keys("--service", "api", "ops") == []  # without the option, ops is nobody


@pytest.mark.parametrize("login", ["Ops", "o ps", "-ops", "x" * 40])
def test_a_bad_shared_login_is_refused(cli: Cli, team: dict[str, str], login: str) -> None:
    result = cli.run("keys", "--service", "api", "--shared-login", login, "--", "ops")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "invalid --shared-login" in result.stderr


@pytest.mark.parametrize("name", ["nobody", "x;rm -rf /", "$(id)", "Root", "a" * 200])
def test_keys_prints_nothing_and_exits_0_for_an_unknown_user(
    cli: Cli, team: dict[str, str], name: str
) -> None:
    result = cli.run("keys", "--service", "api", name)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_keys_fails_closed_when_the_users_cannot_be_read(cli: Cli, team: dict[str, str]) -> None:
    for args in (["keys", "--service", "api"], ["keys", "--service", "api", "dana"]):
        missing = cli.run(*args, environment="nosuchenv")
        assert missing.returncode != 0
        assert missing.stdout == ""
        assert "does not exist" in missing.stderr
        unreachable = cli.run(*args, endpoint="http://127.0.0.1:9")
        assert unreachable.returncode != 0
        assert unreachable.stdout == ""


def test_mistakes_print_one_line_and_change_nothing(
    cli: Cli, team: dict[str, str], tmp_path: Path
) -> None:
    _, private = new_key("x")
    (tmp_path / "id_ed25519").write_text(private)
    line = assert_refused(cli, "user", "add", "dana", "--key", str(tmp_path / "id_ed25519"))
    assert "PRIVATE key" in line
    assert private.splitlines()[1][:20] not in line
    line = assert_refused(cli, "user", "add", "gus", "--key", "-", stdin=private)
    assert "PRIVATE key" in line
    (tmp_path / "bad.pub").write_text(team["dana"] + "\nssh-ed25519 AAAA broken\n")
    assert "line 2" in assert_refused(
        cli, "user", "add", "dana", "--key", str(tmp_path / "bad.pub")
    )
    # A second line smuggled into a comment is one more line, checked as a key of its own.
    (tmp_path / "smuggle.pub").write_text(team["dana"] + "\rcommand=/bin/sh ssh-rsa AAAA\n")
    assert "options" in assert_refused(
        cli, "user", "add", "dana", "--key", str(tmp_path / "smuggle.pub")
    )
    (tmp_path / "inject.pub").write_text(team["dana"].replace(" dana", " x\x00\x1b[2J dana"))
    assert "control character" in assert_refused(
        cli, "user", "add", "gus", "--key", str(tmp_path / "inject.pub")
    )
    assert "does not exist" in assert_refused(
        cli, "user", "add", "gus", "--key", str(tmp_path / "missing.pub")
    )
    assert "invalid user name" in assert_refused(
        cli, "user", "add", "gus;id", "--key", "-", stdin=""
    )
    assert "invalid service name" in assert_refused(
        cli, "user", "add", "dana", "--service", "Bad Service"
    )
    assert "needs at least one public key" in assert_refused(
        cli, "user", "add", "gus", "--service", "api"
    )
    # A typo in a service grants nothing (it used to grant access to a service that
    # does not exist).
    line = assert_refused(
        cli, "user", "add", "dana", "--service", "apj", "--key", "-", stdin=team["dana"], code=1
    )
    assert line.startswith("error: service 'apj' does not exist in environment")
    assert "has no key SHA256:nope" in assert_refused(
        cli, "user", "remove", "dana", "--key", "SHA256:nope", code=1
    )
    assert "no access to service 'web'" in assert_refused(
        cli, "user", "remove", "dana", "--service", "web", code=1
    )
    assert "flotilla user add" in assert_refused(cli, "user", "remove", "gus", code=1)
    assert "flotilla user add" in assert_refused(cli, "user", "activate", "gus", code=1)
    assert "invalid service name" in assert_refused(cli, "keys", "--service", "Bad Service")


def test_every_user_command_has_help() -> None:
    for command in (
        ["user", "add"], ["user", "remove"], ["user", "list"], ["user", "activate"],
        ["user", "deactivate"], ["keys"],
    ):  # fmt: skip
        result = subprocess.run(
            [FLOTILLA, *command, "--help"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout
    keys_help = subprocess.run([FLOTILLA, "keys", "--help"], capture_output=True, text=True)
    assert "AuthorizedKeysCommand /usr/local/sbin/flotilla-authorized-keys %u" in keys_help.stdout


@pytest.fixture
def agent_socket(cli: Cli, tmp_path: Path) -> Iterator[str]:
    """The agent's keys socket, served as the agent serves it, from the moto server."""
    from flotilla.cli.keys_socket import KeysServer, bound_listener
    from flotilla.cli.wiring import AwsSettings, Wiring
    from tests.support.aws import REGION

    settings = AwsSettings(environment=cli.environment, region=REGION, endpoint_url=cli.endpoint)
    path = tmp_path / "keys.sock"
    server = KeysServer(bound_listener(path), Wiring(settings).users)
    server.start()
    try:
        yield str(path)
    finally:
        server.close()


def test_keys_asks_the_agent_first_and_reads_for_itself_without_one(
    cli: Cli, team: dict[str, str], agent_socket: str, tmp_path: Path
) -> None:
    """The agent answers although this process could not reach DynamoDB itself (a dead
    endpoint), so the answer came through the socket; without a socket it fails closed."""
    dead = "http://127.0.0.1:9"
    shared = ["--shared-login", "ops", "--service", "api", "--socket", agent_socket, "--"]
    assert sorted(cli.keys(*shared, "ops", endpoint=dead)) == sorted([team["dana"], team["root"]])
    assert cli.keys(*shared, "erik", endpoint=dead) == []
    assert cli.keys(*shared, "fay", endpoint=dead) == []  # deactivated, read live
    missing = ["--socket", str(tmp_path / "none.sock")]
    unreachable = cli.run("keys", "--service", "api", *missing, "dana", endpoint=dead)
    assert unreachable.returncode != 0
    assert unreachable.stdout == ""
    direct = cli.keys("--service", "api", *missing, "dana")  # read by the command itself
    assert direct == [team["dana"]]
