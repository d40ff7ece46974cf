"""Validation of everything a user can give Flotilla.

Each validator returns the value it accepted (normalised where that is harmless) or
raises `ValidationError` whose message says what is wrong and how to fix it. They run
before anything is stored, so bad input leaves stored state exactly as it was.

A little over 400 lines, on purpose: every rule about what a user may give, and its
message, is kept in this one module (the CLI, the operations and the bad-input suite all
check against it), rather than split where the rules would drift apart.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from flotilla.engine import health_checks
from flotilla.engine.errors import ValidationError
from flotilla.engine.records import (
    HOOK_NAMES,
    MAX_HOOK_TIMEOUT_SECONDS,
    Hook,
    LoadBalancerKind,
    LoadBalancerRef,
    RolloutPolicy,
    RolloutStep,
    Service,
)

# Every pattern is applied with `fullmatch`: `match` with a trailing `$` would accept a
# value ending in a newline ("api\n"), which then breaks unit files, env files and logs.
# Service and environment names end up in table names, stack names, unit names and
# classic ELB names (32 characters at most), so they are kept to a safe alphabet.
_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
_ENV_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,22}[a-z0-9])?")
# botocore's own rule for a region name (botocore/utils.py, validate_region_name).
_REGION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?")
MAX_REGIONS = 16  # of one environment or service (AWS has about 30)
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
# Step plans and gates: a handful of each is what the peers allow (instance refresh: 10
# alarms; CodeDeploy: 50), and every alarm is read at every pass of a rollout.
MAX_STEPS = 20
MAX_ALARMS = 10
MAX_WEBHOOKS = 5
MAX_URL = 2048
_STEP_AMOUNT = re.compile(r"[1-9][0-9]{0,5}|(?:100|[1-9][0-9]?)%")
_DURATION = re.compile(r"([0-9]{1,6})([smh]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}
# CloudWatch's own rule for alarm names: 1-255 characters, no control characters.
_ALARM_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,255}")


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


def region_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _REGION.fullmatch(value):
        raise ValidationError(
            f"invalid AWS region {_show(value)} (from {where}): a region is a name like "
            "eu-west-1 or us-east-1; see `aws ec2 describe-regions`"
        )
    return value


def region_list(values: Sequence[Any], where: str) -> tuple[str, ...]:
    """Regions named in order, each once (the first is the home region)."""
    regions = tuple(region_name(value, where) for value in values)
    repeated = sorted({r for r in regions if regions.count(r) > 1})
    if repeated:
        raise ValidationError(
            f"{where} names {', '.join(repeated)} more than once: name each region once"
        )
    if len(regions) > MAX_REGIONS:
        raise ValidationError(f"{where} names {len(regions)} regions: at most {MAX_REGIONS}")
    return regions


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


def hook(name: Any, value: Any) -> Hook:
    """A lifecycle hook (docs/hooks.md): one of HOOK_NAMES, a non-empty text script of at
    most the size of a unit file, and a timeout from 1 s to MAX_HOOK_TIMEOUT_SECONDS."""
    if name not in HOOK_NAMES:
        raise ValidationError(
            f"unknown hook {_show(name)}: a revision's hooks are {', '.join(HOOK_NAMES)} "
            "(files in its hooks/ folder)"
        )
    if not isinstance(value, Hook) or not isinstance(value.script, str):
        raise ValidationError(f"hook {name} must be a script (text)")
    script, timeout = value.script, value.timeout_seconds
    if "\x00" in script:
        raise ValidationError(f"hook {name} contains a NUL byte; a hook is a text script")
    if len(script.encode("utf-8")) > MAX_UNIT_FILE_BYTES:
        raise ValidationError(f"hook {name} is larger than {MAX_UNIT_FILE_BYTES // 1024} KB")
    if not script.strip():
        raise ValidationError(f"hook {name} is empty; write the commands it runs, or remove it")
    if script.startswith("#!") and not script[2:].lstrip(" \t").startswith("/"):
        raise ValidationError(
            f"hook {name}: its #! line must name the interpreter by absolute path, e.g. "
            "#!/bin/sh or #!/usr/bin/env python3"
        )
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int)
        or not 1 <= timeout <= MAX_HOOK_TIMEOUT_SECONDS
    ):
        raise ValidationError(
            f"invalid timeout {_show(timeout)} for hook {name}: give whole seconds from 1 to "
            f"{MAX_HOOK_TIMEOUT_SECONDS}"
        )
    return value


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
    health_checks.service_health(record)
    rollout_policy(record.rollout)
    weights(record.weights)
    region_list(record.regions, "the service's regions")
    return record


def rollout_policy(policy: RolloutPolicy) -> RolloutPolicy:
    max_in_flight(policy.max_in_flight)
    if policy.revert_max_in_flight is not None:
        max_in_flight(policy.revert_max_in_flight)
    non_negative("max_failures", policy.max_failures)
    rollout_steps(policy.steps)
    alarm_names(policy.alarms)
    webhook_urls(policy.webhooks)
    timeout_seconds("progress deadline", policy.progress_deadline_seconds)
    return policy


# --- step plans and gates ---------------------------------------------------------------

STEPS_HELP = (
    "give steps like 1:5m,25%:10m,pause,100% (instances or a share of the instances that "
    "move, each with an optional bake time after it; pause waits for `flotilla rollout "
    "promote`); the last step is 100%"
)


def parse_steps(text: str) -> tuple[RolloutStep, ...]:
    """`1:5m,25%:10m,pause,100%` as steps; `none` (or nothing) for none."""
    if text.strip().lower() in ("", "none"):
        return ()
    steps = []
    for part in text.split(","):
        item = part.strip()
        if item.lower() == "pause":
            steps.append(RolloutStep(None))
            continue
        amount, colon, bake = item.partition(":")
        amount = amount.strip()
        if not _STEP_AMOUNT.fullmatch(amount):
            raise ValidationError(
                f"invalid step {_show(item)}: {_show(amount)} is neither a count of instances "
                f"(1 or more) nor a share from 1% to 100%; {STEPS_HELP}"
            )
        seconds = duration_seconds(f"bake time in step {_show(item)}", bake) if colon else 0
        steps.append(RolloutStep(amount, seconds))
    return rollout_steps(tuple(steps))


def duration_seconds(what: str, text: str) -> int:
    """Whole seconds written as 90, 90s, 5m or 1h; anything else (nan, -1, 1.5) refused."""
    found = _DURATION.fullmatch(text.strip())
    seconds = int(found.group(1)) * _UNIT_SECONDS[found.group(2)] if found else -1
    if not 0 <= seconds <= MAX_TIMEOUT_SECONDS:
        raise ValidationError(
            f"invalid {what}: {_show(text)} is not a time; give whole seconds, or minutes or "
            f"hours with m or h (e.g. 90, 90s, 5m, 1h), at most {MAX_TIMEOUT_SECONDS // 3600} h"
        )
    return seconds


def rollout_steps(steps: Sequence[RolloutStep]) -> tuple[RolloutStep, ...]:
    """A step plan: at most `MAX_STEPS`, amounts that grow, the last one 100%."""
    if not steps:
        return ()
    if len(steps) > MAX_STEPS:
        raise ValidationError(f"invalid steps: {len(steps)} steps, at most {MAX_STEPS}")
    counts: list[int] = []
    shares: list[int] = []
    for step in steps:
        timeout_seconds("bake time", step.bake_seconds)
        if step.amount is None:
            continue
        if not isinstance(step.amount, str) or not _STEP_AMOUNT.fullmatch(step.amount):
            raise ValidationError(f"invalid step amount {_show(step.amount)}; {STEPS_HELP}")
        kind = shares if step.amount.endswith("%") else counts
        value = int(step.amount.rstrip("%"))
        if kind and value <= kind[-1]:
            raise ValidationError(
                f"invalid steps: {step.amount} after {kind[-1]}{'%' if kind is shares else ''}; "
                "each step must move more than the one before it"
            )
        kind.append(value)
    if steps[-1].amount != "100%":
        last = "pause" if steps[-1].amount is None else steps[-1].amount
        raise ValidationError(
            f"invalid steps: the last step is {last}, not 100%; a step plan must end with "
            "every instance moved (add 100%, with a bake time if you want one)"
        )
    return tuple(steps)


def alarm_names(names: Sequence[Any]) -> tuple[str, ...]:
    if len(names) > MAX_ALARMS:
        raise ValidationError(f"invalid alarms: {len(names)} alarms, at most {MAX_ALARMS}")
    for name in names:
        if not isinstance(name, str) or not _ALARM_NAME.fullmatch(name) or name != name.strip():
            raise ValidationError(
                f"invalid alarm name {_show(name)}: CloudWatch alarm names are 1-255 "
                "characters without control characters or surrounding spaces"
            )
    if len(set(names)) != len(names):
        raise ValidationError("invalid alarms: an alarm is named twice")
    return tuple(names)


def webhook_urls(urls: Sequence[Any]) -> tuple[str, ...]:
    if len(urls) > MAX_WEBHOOKS:
        raise ValidationError(f"invalid webhooks: {len(urls)} webhooks, at most {MAX_WEBHOOKS}")
    for url in urls:
        webhook_url(url)
    if len(set(urls)) != len(urls):
        raise ValidationError("invalid webhooks: a webhook is named twice")
    return tuple(urls)


def webhook_url(value: Any) -> str:
    """An http(s) URL with a host, no credentials in it (it is shown and published), and
    not a link-local address (the instance metadata service lives there)."""
    text = value if isinstance(value, str) else ""
    try:
        parsed = urllib.parse.urlsplit(text)
        host = parsed.hostname or ""
        parsed.port  # noqa: B018 -- raises ValueError for a port that is not one
    except ValueError:
        parsed, host = urllib.parse.urlsplit(""), ""
    if (
        not text
        or len(text) > MAX_URL
        or not text.isprintable()
        or " " in text
        or parsed.scheme not in ("http", "https")
        or not host
    ):
        raise ValidationError(
            f"invalid webhook URL {_show(value)}: give an http:// or https:// URL with a host "
            "(e.g. https://ci.example.com/confirm)"
        )
    if parsed.username is not None or parsed.password or parsed.query or parsed.fragment:
        # Said without the part that may hold a secret (a password, a ?token=...).
        bare = f"{parsed.scheme}://{host}{'' if parsed.port is None else f':{parsed.port}'}"
        raise ValidationError(
            f"invalid webhook URL {_show(bare + parsed.path)}: no user, password, query or "
            "fragment in the URL (they often carry a token, and the URL is stored, shown by "
            "`service show` and `rollout status` and sent with every event); let the endpoint "
            "check its caller another way"
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_link_local:
        raise ValidationError(
            f"invalid webhook URL {_show(value)}: {host} is link-local (the instance metadata "
            "service lives there); give the address of a real endpoint"
        )
    return text


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
