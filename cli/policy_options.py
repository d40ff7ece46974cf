"""The rollout policy's step plan, gates, deadline and revert pace as `service create|update`
take them, and as `service show` prints them.

Each option is parsed by `engine.validation` before anything is read or written, so a
bad one is one line and nothing is stored. `--alarm` and `--webhook` replace the whole
list when given (`--no-alarms`, `--no-webhooks` empty it); `--steps none` clears the step
plan. An alarm must exist in CloudWatch when it is named (`check_alarms_exist`): a typo
would otherwise hold every rollout of the service until someone noticed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from flotilla.engine import validation
from flotilla.engine.errors import ValidationError
from flotilla.engine.records import RolloutPolicy, RolloutStep
from flotilla.scheduler.failures import budget_rule

if TYPE_CHECKING:
    from flotilla.cli.wiring import Wiring

F = TypeVar("F", bound=Callable[..., Any])


def policy_options(default: Callable[[str], str]) -> list[Callable[[F], F]]:
    """The options; `default` words the default (create) or "unchanged" (update)."""
    return [
        click.option(
            "--steps",
            metavar="STEPS",
            help="Step plan, e.g. 1:5m,25%:10m,pause,100% (instances or a share moved, each "
            "with an optional bake time; pause waits for `rollout promote`; the last step is "
            "100%); none clears it " + default("none: one step of 100%"),
        ),
        click.option(
            "--alarm",
            "alarms",
            multiple=True,
            metavar="NAME",
            help="CloudWatch alarm that fails a rollout while in ALARM (repeat for more; "
            "replaces the list; it must exist) " + default("none"),
        ),
        click.option("--no-alarms", is_flag=True, help="Remove every alarm of the service"),
        click.option(
            "--webhook",
            "webhooks",
            multiple=True,
            metavar="URL",
            help="http(s) URL called before each step; anything but a 2xx holds the step "
            "(repeat for more; replaces the list) " + default("none"),
        ),
        click.option("--no-webhooks", is_flag=True, help="Remove every webhook of the service"),
        click.option(
            "--progress-deadline",
            metavar="DURATION",
            help="Fail the rollout when no deploy finishes for this long while instances "
            "deploy, e.g. 10m; 0 turns it off " + default("600s"),
        ),
        click.option(
            "--revert-max-in-flight",
            metavar="N|P%|none",
            help="Instances deploying at once during a revert; none: as --max-in-flight "
            + default("none"),
        ),
    ]


def policy_changes(options: dict[str, Any]) -> dict[str, Any]:
    """The `RolloutPolicy` fields the given options set, each validated."""
    changes: dict[str, Any] = {}
    if options["steps"] is not None:
        changes["steps"] = validation.parse_steps(options["steps"])
    changes.update(_list_option(options, "alarms", "--alarm", "no_alarms", "--no-alarms"))
    changes.update(_list_option(options, "webhooks", "--webhook", "no_webhooks", "--no-webhooks"))
    if "alarms" in changes:
        changes["alarms"] = validation.alarm_names(changes["alarms"])
    if "webhooks" in changes:
        changes["webhooks"] = validation.webhook_urls(changes["webhooks"])
    if options["progress_deadline"] is not None:
        changes["progress_deadline_seconds"] = validation.duration_seconds(
            "--progress-deadline", options["progress_deadline"]
        )
    pace = options["revert_max_in_flight"]
    if pace is not None:
        none = pace.strip().lower() == "none"
        changes["revert_max_in_flight"] = None if none else validation.max_in_flight(pace)
    return changes


def _list_option(
    options: dict[str, Any], key: str, option: str, clear: str, clear_option: str
) -> dict[str, Any]:
    given: tuple[str, ...] = tuple(options[key] or ())
    if given and options[clear]:
        raise ValidationError(f"give {option} or {clear_option}, not both")
    if options[clear]:
        return {key: ()}
    return {key: given} if given else {}


def check_alarms_exist(wiring: Wiring, names: Sequence[str], service: str) -> None:
    """Refuse alarm names that CloudWatch does not know (in this region and account)."""
    if not names:
        return
    found = wiring.alarms.states(list(names))
    missing = [name for name in names if name not in found]
    if missing:
        shown = ", ".join(repr(name[:80]) for name in missing)
        region = wiring.session.region_name
        raise ValidationError(
            f"alarm {shown} does not exist in CloudWatch (region {region}); create it first, "
            f"or leave it out of {service}'s --alarm"
        )


def duration_text(seconds: int) -> str:
    """300 -> `5m`, 90 -> `90s`, 7200 -> `2h`: as --steps and --progress-deadline take it."""
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def steps_text(steps: Sequence[RolloutStep]) -> str:
    """The step plan as --steps takes it: `1:5m,25%:10m,pause,100%`."""
    parts = []
    for step in steps:
        part = "pause" if step.amount is None else step.amount
        if step.bake_seconds:
            part += f":{duration_text(step.bake_seconds)}"
        parts.append(part)
    return ",".join(parts)


def policy_summary(policy: RolloutPolicy) -> dict[str, Any]:
    """The policy for `service show -o json` (steps as data and as --steps text)."""
    return {
        "max_in_flight": policy.max_in_flight,
        "max_failures": policy.max_failures,
        "failure_action": policy.failure_action.value,
        "failure_budget": budget_rule(policy),
        "revert_max_in_flight": policy.revert_max_in_flight,
        "steps": [{"amount": s.amount, "bake_seconds": s.bake_seconds} for s in policy.steps],
        "steps_text": steps_text(policy.steps) or None,
        "alarms": list(policy.alarms),
        "webhooks": list(policy.webhooks),
        "progress_deadline_seconds": policy.progress_deadline_seconds,
    }


def policy_fields(policy: RolloutPolicy) -> list[tuple[str, Any]]:
    """The policy for `service show` as text."""
    deadline = policy.progress_deadline_seconds
    pace = policy.revert_max_in_flight
    return [
        ("max in flight", policy.max_in_flight),
        ("steps", steps_text(policy.steps) or "none (one step of 100%, no bake)"),
        ("alarms", ", ".join(policy.alarms) or "none"),
        ("webhooks", ", ".join(policy.webhooks) or "none"),
        ("progress deadline", f"{duration_text(deadline)}" if deadline else "off"),
        ("max failures", policy.max_failures),
        ("failure action", policy.failure_action.value),
        ("revert pace", pace if pace is not None else f"as max in flight ({policy.max_in_flight})"),
        ("failure budget", budget_rule(policy)),
    ]
