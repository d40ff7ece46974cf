"""The CLI imports a command only when it is used (cli.lazy_group), so that `flotilla keys`,
run by sshd at every SSH login, and `flotilla --help` start fast. What is imported is
checked here, in fresh interpreters (this one has the test bench's OpenTelemetry SDK);
how long it takes is a figure of `scripts/bench --only startup`, not a timed test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from flotilla.cli.lazy_group import LazyCommand, LazyGroup
from flotilla.cli.main import COMMANDS, cli

# Nothing `flotilla keys` needs before its first AWS call.
NOT_FOR_KEYS = (
    "opentelemetry", "opentelemetry.sdk", "moto", "yaml", "cryptography", "tenacity", "gi",
    "pydbus", "flotilla.cli.demo", "flotilla.cli.trace", "flotilla.cli.demo_command",
    "flotilla.cli.trace_command", "flotilla.cli.agent_command", "flotilla.cli.agent_assembly",
    "flotilla.cli.init_command", "flotilla.cli.service_commands", "flotilla.scheduler",
    "flotilla.cli.user_commands", "flotilla.cli.regions", "flotilla.cli.environment_regions",
)  # fmt: skip
# The command modules (and the composition root) `flotilla keys` does use.
KEYS_CLI_MODULES = {
    "flotilla.cli", "flotilla.cli.main", "flotilla.cli.lazy_group", "flotilla.cli.options",
    "flotilla.cli.keys_command", "flotilla.cli.authorized_keys", "flotilla.cli.keys_socket",
    "flotilla.cli.wiring", "flotilla.cli.settings",
}  # fmt: skip


def modules_after(script: str, **env: str) -> set[str]:
    """sys.modules of a fresh interpreter after `script` (or what the script put in
    `modules_seen`); the script prints nothing itself."""
    finish = (
        "\nimport json, sys\n"
        "print(json.dumps(sorted(globals().get('modules_seen', sys.modules))))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script) + finish],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    return set(json.loads(ran.stdout.splitlines()[-1]))


def test_resolving_keys_and_its_help_imports_no_other_command_and_no_aws_sdk() -> None:
    loaded = modules_after(
        """
        import click
        from flotilla.cli.main import cli
        context = click.Context(cli, info_name="flotilla")
        keys = cli.get_command(context, "keys")
        keys.get_help(click.Context(keys, info_name="keys", parent=context))
        cli.get_help(context)
        """
    )
    assert "flotilla.cli.keys_command" in loaded
    assert not loaded & {*NOT_FOR_KEYS, "boto3", "botocore.session"}
    assert {m for m in loaded if m.startswith("flotilla.cli")} <= KEYS_CLI_MODULES


def test_keys_imports_nothing_it_does_not_need_before_its_first_aws_call() -> None:
    """`flotilla keys alice` through the console script's main(), up to its first AWS call
    (where the modules are taken; the call answers "no such user")."""
    loaded = modules_after(
        """
        import sys
        import botocore.client

        seen = []
        def first_call(client, operation, parameters):
            seen.append(set(sys.modules))
            return {}
        botocore.client.BaseClient._make_api_call = first_call
        sys.argv = ["flotilla", "keys", "alice", "--env", "startup", "--region", "us-east-1",
                    "--endpoint-url", "http://127.0.0.1:9"]
        from flotilla.cli.main import main
        try:
            main()
        except SystemExit as exited:
            assert exited.code == 0, exited.code
        assert seen, "keys made no AWS call"
        modules_seen = seen[0]
        """,
        AWS_ACCESS_KEY_ID="startup",
        AWS_SECRET_ACCESS_KEY="startup",
        AWS_EC2_METADATA_DISABLED="true",
    )
    assert "boto3" in loaded  # the one thing it does need
    assert not loaded & set(NOT_FOR_KEYS)
    assert {m for m in loaded if m.startswith("flotilla.cli")} <= KEYS_CLI_MODULES


def test_keys_answered_by_the_agent_imports_no_aws_sdk(tmp_path: Path) -> None:
    """On a worker whose agent runs, a login's `flotilla keys` asks the agent's socket and
    never builds a boto3 client (cli.keys_socket): the figure of `bench --only startup`."""
    from flotilla.adapters.memory_users import MemoryUserStore
    from flotilla.cli.keys_socket import KeysServer, bound_listener
    from flotilla.engine.clock import FakeClock
    from flotilla.engine.users import User
    from tests.unit.test_users import ed25519_line

    key = ed25519_line("alice@x")
    store = MemoryUserStore(FakeClock())
    store.put_user(User("alice", (key,), services=("api",)))
    path = tmp_path / "keys.sock"
    server = KeysServer(bound_listener(path), store)
    server.start()
    try:
        loaded = modules_after(
            f"""
            import sys
            sys.argv = ["flotilla", "keys", "--service", "api", "--socket", {str(path)!r},
                        "alice", "--endpoint-url", "http://127.0.0.1:9"]
            from flotilla.cli.main import main
            try:
                main()
            except SystemExit as exited:
                assert exited.code == 0, exited.code
            modules_seen = set(sys.modules)
            """
        )
    finally:
        server.close()
    assert not loaded & {*NOT_FOR_KEYS, "boto3", "botocore.session", "botocore.client"}
    assert {m for m in loaded if m.startswith("flotilla.cli")} <= KEYS_CLI_MODULES - {
        "flotilla.cli.wiring"
    }


def test_the_root_help_imports_no_command() -> None:
    loaded = modules_after(
        """
        import click
        from flotilla.cli.main import cli
        cli.get_help(click.Context(cli, info_name="flotilla"))
        """
    )
    assert not {m for m in loaded if m.startswith("flotilla.cli")} - {
        "flotilla.cli", "flotilla.cli.main", "flotilla.cli.lazy_group",
    }  # fmt: skip
    assert "boto3" not in loaded


def walk(group: click.Group, context: click.Context) -> list[list[str]]:
    """Every command path below `group`, each resolved through the group."""
    paths = []
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        paths.append([*context.command_path.split()[1:], name])
        if isinstance(command, click.Group):
            paths += walk(command, click.Context(command, info_name=name, parent=context))
    return paths


def test_every_command_resolves_and_answers_help() -> None:
    paths = walk(cli, click.Context(cli, info_name="flotilla"))
    assert [[name] for name in COMMANDS] == [p for p in paths if len(p) == 1]
    assert ["service", "provision"] in paths
    for path in paths:
        helped = CliRunner().invoke(cli, [*path, "--help"], prog_name="flotilla")
        assert helped.exit_code == 0, (path, helped.output)
        assert helped.output.startswith(f"Usage: flotilla {' '.join(path)} "), path


@pytest.mark.parametrize("width", [50, 80, 200])
def test_the_root_help_lists_what_the_loaded_commands_say(width: int) -> None:
    """The listing read from the sources is the one click makes from the loaded commands
    (in a fresh interpreter: here they are all loaded already)."""
    script = f"""
        import json, click
        from flotilla.cli.main import cli
        def help_text():
            return cli.get_help(click.Context(cli, info_name="flotilla", terminal_width={width}))
        lazy = help_text()
        context = click.Context(cli, info_name="flotilla")
        for name in cli.list_commands(context):
            cli.get_command(context, name)
        print(json.dumps([lazy, help_text()]))
    """
    ran = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                         text=True, timeout=120, check=False)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    lazy, loaded = json.loads(ran.stdout)
    assert lazy == loaded
    for name in COMMANDS:
        assert f"\n  {name} " in lazy


SAMPLE = '''
"""Commands written every way click allows, for the listing read from the source."""

import click

NOT_LITERAL = "computed " + "help"


@click.command()
def plain():
    """First sentence of the help. Second sentence, which is not shown.

    More help.
    """


@click.command("renamed", help="Help given to the decorator.")
def with_help():
    """Not this docstring."""


@click.command(short_help="A short help of its own")
def shortened():
    """A long help that the short help replaces in listings."""


@click.command(hidden=True)
def secret():
    """Not listed."""


@click.command(deprecated=True)
def old():
    """Use `plain` instead."""


@click.command()
def quiet():
    pass


@click.group()
def grouped():
    """\\b
    A first paragraph click must not rewrap,
    over two lines.
    """


@click.command(help=NOT_LITERAL)
def computed():
    """Not this either."""


class Custom(click.Command):
    def get_short_help_str(self, limit=45):
        return "said by the class"


@click.command(cls=Custom)
def custom():
    """Not this: the class decides."""


def built():
    """Not a command at all."""


built = click.Command("built", help="Built without a decorator.")
'''


def test_listings_read_from_source_match_what_click_makes_of_the_loaded_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lazy_sample.py").write_text(SAMPLE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ["plain", "with_help", "shortened", "secret", "old", "quiet", "grouped", "computed",
             "custom", "built"]  # fmt: skip
    lazy = {name: LazyCommand(f"lazy_sample:{name}") for name in names}

    def listing(width: int) -> str:
        group = LazyGroup("sample", lazy=lazy)
        return group.get_help(click.Context(group, info_name="sample", terminal_width=width))

    try:
        before = {width: listing(width) for width in (40, 80, 120)}
        assert "said by the class" in before[80]
        assert "secret" not in before[80]
        loaded = LazyGroup("sample", lazy=lazy)
        context = click.Context(loaded, info_name="sample")
        for name in names:
            loaded.get_command(context, name)
        for width, text in before.items():
            wide = click.Context(loaded, info_name="sample", terminal_width=width)
            assert text == loaded.get_help(wide)
    finally:
        sys.modules.pop("lazy_sample", None)
