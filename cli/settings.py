"""Reading the AWS settings of a command, each validated where it is read.

A setting comes from an option, else a variable, else a default (the profile's region
last, as boto3 finds it). Whatever is wrong with one is said in one line that names the
setting, where it came from (`--endpoint-url`, `FLOTILLA_ENDPOINT_URL`, ...) and what to
write instead, before any AWS call, so a mistyped endpoint or region is never a
traceback from deep inside botocore. An empty option means "not given", as for every
option; a variable that is set but empty is refused when it would otherwise send the
command somewhere else than meant (an empty `FLOTILLA_ENDPOINT_URL` would send the demo's
commands to AWS itself), and otherwise means "not set" (the region variables).

What botocore itself reads (the config file, `AWS_PROFILE`'s profile, the profile's
region, `AWS_ENDPOINT_URL`, `AWS_STS_REGIONAL_ENDPOINTS`...) is checked by botocore; its
refusals are turned into one line at the edge where sessions and clients are made
(`configuration_error`, used by `cli.wiring`).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from flotilla.adapters.aws_errors import REGION_VARIABLES
from flotilla.engine.errors import ConfigurationError, ValidationError
from flotilla.engine.validation import environment_name, region_name

ENDPOINT_VARIABLES = ("FLOTILLA_ENDPOINT_URL", "AWS_ENDPOINT_URL")
# An endpoint per region, for emulators standing in for several regions (the tests'
# outages of one region): `eu-west-1=http://127.0.0.1:5001,us-east-1=http://...`.
REGION_ENDPOINTS_VARIABLE = "FLOTILLA_ENDPOINT_URLS"


@dataclass(frozen=True)
class Resolved:
    """The settings as read, and where each came from (for the messages about them)."""

    environment: str
    region: str | None
    profile: str | None
    endpoint_url: str | None
    sources: Mapping[str, str]  # setting -> "--region", "AWS_REGION", "default", ...
    region_endpoints: Mapping[str, str] = field(default_factory=dict)  # region -> URL


def resolve(
    environment: str | None,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """Options first, then variables, then defaults; each value validated on the way."""
    variables = os.environ if environ is None else environ
    sources: dict[str, str] = {}

    env_value, sources["environment"] = _first(
        ("--env", environment), ("FLOTILLA_ENV", variables.get("FLOTILLA_ENV"))
    )
    env_value = env_value or "default"
    sources.setdefault("environment", "default")
    environment_name(env_value, where=sources["environment"])

    region_value, where = _first(
        ("--region", region), *((v, (variables.get(v) or "").strip()) for v in REGION_VARIABLES)
    )
    if region_value is not None:
        sources["region"] = where
        region_name(region_value, where)

    profile_value, where = _first(
        ("--profile", profile), ("FLOTILLA_PROFILE", variables.get("FLOTILLA_PROFILE"))
    )
    if profile_value is not None:
        sources["profile"] = where
    elif "AWS_PROFILE" in variables:
        sources["profile"] = "AWS_PROFILE"  # boto3 reads it itself; named in its errors

    endpoint_value = endpoint_url or None  # an empty option is "not given"
    if endpoint_value is not None:
        sources["endpoint_url"] = "--endpoint-url"
        endpoint(endpoint_value, "--endpoint-url")
    for variable in ENDPOINT_VARIABLES:
        if variable not in variables:
            continue
        value = variables[variable]
        if not value.strip():
            raise ValidationError(
                f"{variable} is set but empty; unset it to use AWS's own endpoints, or set it "
                "to a URL like http://127.0.0.1:5000"
            )
        endpoint(value, variable)  # botocore reads AWS_ENDPOINT_URL itself: checked here too
        if endpoint_value is None and variable == "FLOTILLA_ENDPOINT_URL":
            endpoint_value = value
            sources["endpoint_url"] = variable
    regional = region_endpoints(variables.get(REGION_ENDPOINTS_VARIABLE))
    return Resolved(env_value, region_value, profile_value, endpoint_value, sources, regional)


def region_endpoints(text: str | None) -> dict[str, str]:
    """`REGION=URL,REGION=URL`, each part validated; unset or empty is none."""
    found: dict[str, str] = {}
    where = REGION_ENDPOINTS_VARIABLE
    for part in (text or "").split(","):
        if not part.strip():
            continue
        region, equals, url = part.strip().partition("=")
        if not equals:
            raise ValidationError(
                f"invalid {where} part {part[:60]!r}: write REGION=URL pairs separated by "
                "commas, like eu-west-1=http://127.0.0.1:5001"
            )
        region_name(region, where)
        if region in found:
            raise ValidationError(f"{where} names {region} twice: give each region one URL")
        found[region] = endpoint(url, where)
    return found


def _first(*candidates: tuple[str, str | None]) -> tuple[str | None, str]:
    """The first candidate given (not None or empty), with where it came from."""
    for where, value in candidates:
        if value:
            return value, where
    return None, ""


def endpoint(value: str, where: str) -> str:
    """An endpoint URL botocore can use: http(s)://host[:port][/path], nothing else."""
    shown = f"{value[:60]!r} (from {where})"
    example = "write it like http://127.0.0.1:5000 or https://dynamodb.eu-west-1.amazonaws.com"
    if value != value.strip() or any(c.isspace() or not c.isprintable() for c in value):
        raise ValidationError(f"invalid endpoint URL {shown}: it contains blanks; {example}")
    try:
        parsed = urllib.parse.urlsplit(value)
        port = parsed.port  # raises ValueError for a port that is not a number 0-65535
    except ValueError:
        raise ValidationError(
            f"invalid endpoint URL {shown}: the port must be a number from 1 to 65535; {example}"
        ) from None
    if parsed.scheme not in ("http", "https"):
        raise ValidationError(
            f"invalid endpoint URL {shown}: it needs http:// or https://; {example}"
        )
    if not parsed.hostname:
        raise ValidationError(f"invalid endpoint URL {shown}: it names no host; {example}")
    if port == 0:
        raise ValidationError(
            f"invalid endpoint URL {shown}: the port must be a number from 1 to 65535; {example}"
        )
    return value


# An SNS topic's ARN: arn:PARTITION:sns:REGION:ACCOUNT:NAME (a name of 1-256 letters,
# digits, hyphens and underscores; a FIFO topic's ends in .fifo).
_TOPIC_ARN = re.compile(
    r"arn:aws(?:-[a-z]+)*:sns:[a-z0-9-]+:[0-9]{12}:"
    r"(?:[A-Za-z0-9_-]{1,256}|[A-Za-z0-9_-]{1,251}[.]fifo)"
)


def topic_arn(value: str, where: str) -> str:
    """An SNS topic's ARN, as the environment stack's output `EventsTopicArn` gives it."""
    if not _TOPIC_ARN.fullmatch(value):
        raise ValidationError(
            f"invalid events topic {value[:80]!r} (from {where}): write the topic's ARN, like "
            "arn:aws:sns:eu-west-1:123456789012:flotilla-prod-events (the environment "
            "stack's output EventsTopicArn)"
        )
    return value


def configuration_error(
    error: Exception, resolved: Mapping[str, str], what: str
) -> ConfigurationError:
    """One line for something botocore refused about the settings or its config files."""
    detail = (
        str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    )
    where = ", ".join(f"{setting} from {source}" for setting, source in sorted(resolved.items()))
    known = f" (settings: {where})" if where else ""
    return ConfigurationError(
        f"{what}: botocore refused the AWS settings: {detail}{known}; check the options, the "
        "AWS_* variables and ~/.aws/config"
    )
