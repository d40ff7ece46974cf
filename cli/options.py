"""Options shared by every command that talks to AWS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from flotilla.cli.wiring import AwsSettings

F = TypeVar("F", bound=Callable[..., Any])


def aws_options(command: F) -> F:
    """--env, --region, --profile and --endpoint-url, resolved into `settings`."""
    options = [
        click.option(
            "--env",
            "environment",
            help="Flotilla environment name [FLOTILLA_ENV, default: default]",
        ),
        click.option("--region", help="AWS region [AWS_REGION or your profile's]"),
        click.option("--profile", help="AWS profile [AWS_PROFILE]"),
        click.option(
            "--endpoint-url",
            help="AWS endpoint, e.g. a moto server for the demo [FLOTILLA_ENDPOINT_URL]",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def settings_from(
    environment: str | None, region: str | None, profile: str | None, endpoint_url: str | None
) -> AwsSettings:
    return AwsSettings.resolve(environment, region, profile, endpoint_url)
