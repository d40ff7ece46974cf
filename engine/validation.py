"""Validation of everything a user can give Flotilla.

Each validator returns the value it accepted (normalised where that is harmless) or
raises `ValidationError` whose message says what is wrong and how to fix it. They run
before anything is stored, so bad input leaves stored state exactly as it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flotilla.engine.errors import ValidationError
from flotilla.engine.records import LoadBalancerKind, LoadBalancerRef, Service

# Every pattern is applied with `fullmatch`: `match` with a trailing `$` would accept a
# value ending in a newline ("api\n"), which then breaks unit files, env files and logs.
# Service and environment names end up in table names, stack names, unit names and
# classic ELB names (32 characters at most), so they are kept to a safe alphabet.
_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
_ENV_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,22}[a-z0-9])?")
# systemd: unit names are made of ASCII letters, digits, ":", "-", "_", ".", "\\" and at
# most one "@" (templates); Flotilla accepts only service, socket and timer units.
_UNIT_STEM = re.compile(r"[A-Za-z0-9:_.\\-]+(?:@[A-Za-z0-9:_.\\-]*)?")
UNIT_SUFFIXES = (".service", ".socket", ".timer")
# Installed names get "flotilla-" and "-<12 hex>" added, and systemd allows 255 in all.
MAX_UNIT_NAME = 200
_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_MAX_IN_FLIGHT = re.compile(r"(?:[1-9][0-9]{0,5}|(?:100|[1-9][0-9]?)%)")
MAX_WEIGHT = 1_000_000
MAX_UNIT_FILE_BYTES = 64 * 1024
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_TIMEOUT_SECONDS = 24 * 3600


def service_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValidationError(
            f"invalid service name {_show(value)}: use 1-32 lowercase letters, digits and "
            "hyphens, starting with a letter and not ending with a hyphen (e.g. 'api')"
        )
    return value


def environment_name(value: Any, *, where: str | None = None) -> str:
    """`where` names the option or variable the value came from, for the message."""
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        source = f" (from {where})" if where else ""
        raise ValidationError(
            f"invalid environment name {_show(value)}{source}: use 1-24 lowercase letters, "
            "digits and hyphens, starting with a letter (e.g. 'prod')"
        )
    return value


def unit_name(value: Any) -> str:
    if not isinstance(value, str) or not value.endswith(UNIT_SUFFIXES):
        raise ValidationError(
            f"invalid unit name {_show(value)}: Flotilla deploys only .service, .socket and "
            ".timer units; name the file like 'web.service'"
        )
    stem = value.rsplit(".", 1)[0]
    if not stem or len(value) > MAX_UNIT_NAME or not _UNIT_STEM.fullmatch(stem):
        raise ValidationError(
            f"invalid unit name {_show(value)}: systemd allows letters, digits and ':-_.\\' "
            f"(and one '@' for templates), at most {MAX_UNIT_NAME} characters here"
        )
    return value


def unit_file(name: str, text: Any) -> str:
    """A unit file must be UTF-8 text in systemd's INI-like syntax, of sensible size."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(
                f"unit {name} is not UTF-8 text (byte {exc.start}); unit files must be text"
            ) from exc
    if not isinstance(text, str):
        raise ValidationError(f"unit {name} must be text, not {type(text).__name__}")
    if len(text.encode("utf-8")) > MAX_UNIT_FILE_BYTES:
        raise ValidationError(f"unit {name} is larger than {MAX_UNIT_FILE_BYTES // 1024} KB")
    if "\x00" in text:
        raise ValidationError(f"unit {name} contains a NUL byte; unit files must be text")
    section = None
    continued = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if continued:
            continued = line.endswith("\\")
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise ValidationError(f"unit {name}, line {number}: malformed section header")
            section = line[1:-1]
            continue
        if "=" not in line:
            raise ValidationError(
                f"unit {name}, line {number}: expected 'Key=Value' or '[Section]', got {raw!r:.60}"
            )
        if section is None:
            raise ValidationError(
                f"unit {name}, line {number}: setting before any [Section] header"
            )
        continued = line.endswith("\\")
    if section is None:
        raise ValidationError(f"unit {name} has no [Section]; is it really a unit file?")
    return text


def environment_variables(unit: str, variables: Any) -> dict[str, str]:
    if not isinstance(variables, Mapping):
        raise ValidationError(f"environment of {unit} must map names to values")
    accepted: dict[str, str] = {}
    for key, value in variables.items():
        if not isinstance(key, str) or not _ENV_VAR.fullmatch(key):
            raise ValidationError(
                f"invalid environment variable name {_show(key)} in {unit}: use letters, "
                "digits and underscores, not starting with a digit (POSIX)"
            )
        if not isinstance(value, str):
            raise ValidationError(f"value of {key} in {unit} must be text")
        # The value itself is never shown: it may be a secret.
        if "\x00" in value:
            raise ValidationError(f"value of {key} in {unit} contains a NUL byte")
        if len(value.encode("utf-8")) > MAX_ENV_VALUE_BYTES:
            raise ValidationError(
                f"value of {key} in {unit} is over {MAX_ENV_VALUE_BYTES // 1024} KB"
            )
        accepted[key] = value
    return accepted


def whole_number(text: str) -> int | None:
    """`text` as a whole number written in ASCII digits (spaces around allowed), else None.

    str.isdigit() alone also admits digits such as '¹' or '٣', which int() refuses or
    reads as another script's numbers: a command line takes 0-9 only.
    """
    digits = text.strip()
    return int(digits) if digits.isascii() and digits.isdigit() else None


def weight(revision: str, value: Any) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        number = whole_number(value)
    if number is None:
        raise ValidationError(
            f"invalid weight {_show(value)} for {_show(revision)}: weights are whole numbers "
            f"from 0 to {MAX_WEIGHT} (e.g. v1=90 v2=10)"
        )
    if not 0 <= number <= MAX_WEIGHT:
        raise ValidationError(
            f"invalid weight {number} for {_show(revision)}: weights are whole numbers from 0 to "
            f"{MAX_WEIGHT}"
        )
    return number


def weights(values: Mapping[Any, Any]) -> dict[str, int]:
    return {str(revision): weight(str(revision), w) for revision, w in values.items()}


def revision_label(value: Any) -> str:
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise ValidationError(
            f"invalid revision label {_show(value)}: use up to 64 letters, digits and "
            "'._+-', starting with a letter or digit (e.g. 'v2' or '2026.11.24-1')"
        )
    return value


def max_in_flight(value: Any) -> str:
    text = (
        str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    )
    if not _MAX_IN_FLIGHT.fullmatch(text):
        raise ValidationError(
            f"invalid max_in_flight {_show(value)}: give a count (e.g. 2) or a share of "
            "the instances from 1% to 100% (e.g. 25%)"
        )
    return text


def timeout_seconds(what: str, value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= MAX_TIMEOUT_SECONDS
    ):
        raise ValidationError(
            f"invalid {what} {_show(value)}: give whole seconds from 0 to {MAX_TIMEOUT_SECONDS}"
        )
    return value


def non_negative(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"invalid {what} {_show(value)}: give a whole number, 0 or more")
    return value


def service(record: Service) -> Service:
    """A whole service record, as the CLI or an API caller built it."""
    service_name(record.name)
    if record.load_balancer is not None:
        load_balancer(record.load_balancer)
    timeout_seconds("drain timeout", record.drain_timeout_seconds)
    timeout_seconds("health timeout", record.health_timeout_seconds)
    timeout_seconds("settle period", record.settle_seconds)
    max_in_flight(record.rollout.max_in_flight)
    non_negative("max_failures", record.rollout.max_failures)
    weights(record.weights)
    return record


_CLASSIC_ELB = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?")
_TARGET_GROUP_ARN = re.compile(
    r"arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}"
)


def load_balancer(ref: LoadBalancerRef) -> LoadBalancerRef:
    if ref.kind is LoadBalancerKind.CLASSIC and not _CLASSIC_ELB.fullmatch(ref.name):
        raise ValidationError(
            f"invalid classic ELB name {_show(ref.name)}: 1-32 letters, digits and hyphens"
        )
    if ref.kind is LoadBalancerKind.TARGET_GROUP and not _TARGET_GROUP_ARN.fullmatch(ref.name):
        raise ValidationError(
            f"invalid target group {_show(ref.name)}: give the target group's full ARN "
            "(arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)"
        )
    return ref


def _show(value: Any) -> str:
    """A short, printable rendering of a rejected value (names only, never env values)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
