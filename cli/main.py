"""The `flotilla` command: the root group that every subcommand hangs from.

Errors Flotilla raises on purpose become one clear line and an exit code (2 for bad
input, 1 for anything else that failed), never a traceback.
"""

from __future__ import annotations

import sys
from importlib.metadata import version

import click

from flotilla.cli import DISTRIBUTION
from flotilla.engine.errors import FlotillaError, ValidationError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version(DISTRIBUTION), prog_name="flotilla")
def cli() -> None:
    """Flotilla deploys systemd units across a fleet on AWS.

    Every deploy on every instance is a persisted state machine, so an agent
    that crashes resumes where it stopped.
    """


def _register_commands() -> None:
    from flotilla.cli.agent_command import agent
    from flotilla.cli.demo_command import demo
    from flotilla.cli.history_command import history
    from flotilla.cli.init_command import init
    from flotilla.cli.provision_command import provision
    from flotilla.cli.revision_commands import revision
    from flotilla.cli.rollout_commands import rollout
    from flotilla.cli.scheduler_command import scheduler
    from flotilla.cli.service_commands import service
    from flotilla.cli.trace_command import trace
    from flotilla.cli.user_commands import keys, user
    from flotilla.cli.weights_command import weights

    cli.add_command(demo)
    cli.add_command(agent)
    cli.add_command(init)
    cli.add_command(service)
    service.add_command(provision)
    cli.add_command(revision)
    cli.add_command(weights)
    cli.add_command(trace)
    cli.add_command(user)
    cli.add_command(keys)
    cli.add_command(rollout)
    cli.add_command(history)
    cli.add_command(scheduler)


_register_commands()


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
