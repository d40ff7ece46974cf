"""The `flotilla` command: the root group that every subcommand hangs from.

Errors Flotilla raises on purpose become one clear line and an exit code (2 for bad
input, 1 for anything else that failed), never a traceback.
"""

from __future__ import annotations

import sys

import click

from flotilla.cli import DISTRIBUTION
from flotilla.cli.lazy_group import LazyCommand, LazyGroup
from flotilla.engine.errors import FlotillaError, TransientError, ValidationError

# Every command, by name, and where it is defined. A command's module is imported only
# when that command is used (see cli.lazy_group); its one-line help in `flotilla --help`
# comes from its own docstring.
COMMANDS = {
    "agent": LazyCommand("flotilla.cli.agent_command:agent"),
    "demo": LazyCommand("flotilla.cli.demo_command:demo"),
    "history": LazyCommand("flotilla.cli.history_command:history"),
    "init": LazyCommand("flotilla.cli.init_command:init"),
    "keys": LazyCommand("flotilla.cli.keys_command:keys"),
    "revision": LazyCommand("flotilla.cli.revision_commands:revision"),
    "rollout": LazyCommand("flotilla.cli.rollout_commands:rollout"),
    "scheduler": LazyCommand("flotilla.cli.scheduler_command:scheduler"),
    "service": LazyCommand(
        "flotilla.cli.service_commands:service",
        subcommands={"provision": "flotilla.cli.provision_command:provision"},
    ),
    "trace": LazyCommand("flotilla.cli.trace_command:trace"),
    "user": LazyCommand("flotilla.cli.user_commands:user"),
    "weights": LazyCommand("flotilla.cli.weights_command:weights"),
}


# The version is looked up (importlib.metadata) only when --version is asked for.
@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION, prog_name="flotilla")
def cli() -> None:
    """Flotilla deploys systemd units across a fleet on AWS.

    Every deploy on every instance is a persisted state machine, so an agent
    that crashes resumes where it stopped.
    """


def main() -> None:
    """Console-script entry point."""
    try:
        code = cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.UsageError as usage:
        # One line, like every other error: what is wrong, and where the help is.
        where = usage.ctx.command_path if usage.ctx is not None else "flotilla"
        click.echo(f"error: {_printable(usage.format_message())} (see `{where} --help`)", err=True)
        sys.exit(usage.exit_code)
    except click.ClickException as failure:
        click.echo(f"error: {_printable(failure.format_message())}", err=True)
        sys.exit(failure.exit_code)
    except ValidationError as bad_input:
        click.echo(f"error: {bad_input.message}", err=True)
        sys.exit(2)
    except TransientError as unreachable:
        # Each call was tried a few times already, and said so (cli.aws_calls).
        click.echo(f"error: {unreachable.message}; run the command again in a moment", err=True)
        sys.exit(1)
    except FlotillaError as failure:
        click.echo(f"error: {failure.message}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _printable(text: str) -> str:
    """Click echoes what the user typed; a control character in it could drive the
    terminal (an escape sequence) or break the one line, so it is shown escaped."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


if __name__ == "__main__":
    main()
