"""Options shared by every command that talks to AWS, and the wiring they resolve into."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from flotilla.adapters.aws_errors import REGION_VARIABLES
from flotilla.engine.errors import ValidationError

if TYPE_CHECKING:  # the composition root imports boto3: only a command that runs needs it
    from flotilla.cli.wiring import AwsSettings, Wiring

F = TypeVar("F", bound=Callable[..., Any])


def aws_options(command: F) -> F:
    """--env, --region, --profile and --endpoint-url, resolved into `settings`."""
    return _aws_options(
        click.option(
            "--region",
            help=f"AWS region [{', '.join(REGION_VARIABLES)} or your profile's]",
        ),
        command,
    )


def aws_options_of_regions(command: F) -> F:
    """As `aws_options`, with --region given once per region (`given_regions`); the
    first is where the command starts."""
    return _aws_options(
        click.option(
            "--region",
            multiple=True,
            help="AWS region; repeat it for each region, the home region first "
            f"[{', '.join(REGION_VARIABLES)} or your profile's]",
        ),
        command,
    )


def given_regions(options: dict[str, Any]) -> tuple[str, ...]:
    """The regions given with `aws_options_of_regions`, checked; () when none was."""
    from flotilla.engine.validation import region_list

    given = options["region"]
    return region_list(
        list(given) if isinstance(given, tuple) else [given] * bool(given), "--region"
    )


def _aws_options(region: Callable[[F], F], command: F) -> F:
    options: list[Callable[[F], F]] = [
        click.option(
            "--env",
            "environment",
            help="Flotilla environment name [FLOTILLA_ENV, default: default]",
        ),
        region,
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
    from flotilla.cli.wiring import AwsSettings

    return AwsSettings.resolve(environment, region, profile, endpoint_url)


def wiring_from(options: dict[str, Any], *, interactive: bool = True) -> Wiring:
    """The composition root for a command's `aws_options` (nothing is built until used).
    `interactive` (a person waits): its AWS calls give up in seconds and say when they
    retry (`cli.aws_calls`)."""
    from flotilla.cli.wiring import Wiring

    region = options["region"]
    if isinstance(region, tuple):  # `aws_options_of_regions`: the first is the entry
        region = given_regions(options)[0] if region else None
    settings = settings_from(
        options["environment"], region, options["profile"], options["endpoint_url"]
    )
    return Wiring(settings, interactive=interactive)


def parse_seconds(option: str, text: str, *, minimum: float, maximum: float = math.inf) -> float:
    """A number of seconds given on the command line, refused in one clear line."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not minimum <= value <= maximum:  # NaN fails every test
        upper = "" if math.isinf(maximum) else f" and at most {maximum:g}"
        raise ValidationError(
            f"invalid {option} {text[:40]!r}: give a number of seconds, at least {minimum:g}{upper}"
        )
    return value


class Seconds(click.ParamType[float]):
    """A finite number of seconds in a range (click's FloatRange lets `nan` through)."""

    name = "seconds"

    def __init__(self, minimum: float, maximum: float = math.inf) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        option = param.opts[0] if param is not None and param.opts else "value"
        return parse_seconds(option, str(value), minimum=self.minimum, maximum=self.maximum)
