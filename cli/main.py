"""The `flotilla` command: the root group that every subcommand hangs from."""

from __future__ import annotations

from importlib.metadata import version

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version("flotilla"), prog_name="flotilla")
def cli() -> None:
    """Flotilla deploys systemd units across a fleet on AWS.

    Every deploy on every instance is a persisted state machine, so an agent
    that crashes resumes where it stopped.
    """


def main() -> None:
    """Console-script entry point."""
    cli()
