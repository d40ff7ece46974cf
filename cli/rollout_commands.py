"""`flotilla rollout status|watch|plan|pause|resume|promote|revert|undo`: see and steer a
rollout.

Status, watch and plan only read (see `cli.progress`, `cli.follow` and `cli.rollout_plan`).
Pause, resume, promote, revert and undo are the engine's operations
(`engine.operations.steering`: a conditional change of the service record, a history line
saying who did it, then a wake-up for the scheduler that the change does not depend on);
these commands parse, call them and print what they did. The rollout state itself is the
scheduler's alone; nothing here writes it.

Two ways back, on purpose (`engine.operations.rules`): `revert` restores the *last good*
weights (those of the last rollout without a failed deploy, as the scheduler's auto-revert
does); `undo` goes back through the weights the service *had*, whether their rollout
succeeded or not, like kubectl's `rollout undo` and Nomad's `job revert`.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

import click

from flotilla.cli.follow import follow_options, wait_options, watch_rollout
from flotilla.cli.notify import warn_unwoken
from flotilla.cli.options import aws_options, wiring_from
from flotilla.cli.output import output_option, print_json, print_json_line
from flotilla.cli.regional_status import rollout_status
from flotilla.cli.rollout_plan_command import plan_command
from flotilla.cli.waves_command import waves_command
from flotilla.cli.wiring import Wiring
from flotilla.engine import validation
from flotilla.engine.errors import ValidationError
from flotilla.engine.operations.names import find_service, weights_text
from flotilla.engine.operations.steering import Change

MAX_REASON = 200
MAX_STEPS = 100  # the history keeps at most this many entries (records.HISTORY_LIMIT)


@click.group(short_help="See, plan, watch, pause, promote, revert and undo a rollout.")
def rollout() -> None:
    """See, plan, watch, pause, resume, promote, revert and undo a service's rollout."""


rollout.add_command(plan_command)
rollout.add_command(waves_command)


# --- reading --------------------------------------------------------------------------


@rollout.command(short_help="Show a service's rollout and every live instance.")
@click.argument("service")
@output_option
@aws_options
def status(service: str, output: str, **options: Any) -> None:
    """Show SERVICE's rollout: weights, failures, what it waits for, a bar per revision and
    every live instance.

    WAITING FOR names what holds the rollout, as the scheduler's own planner finds it on
    what status reads: a free slot, deploys under way, a bake (until when), a webhook gate,
    the alarms, a pause step, a paused or held service, the progress deadline; and
    instances that are silent or not yet healthy. JSON has them as `waiting_for`.

    Each instance shows when it was last heard from (its heartbeat, or its deploy's last
    checkpoint if later) and its agent's version. One that missed two heartbeats (its
    agent's own interval: a third of the hold it took on its instance) is shown as silent,
    until the instance TTL passes and it no longer counts.

    A service in several regions is shown region by region, each read from its own
    region, after its rollout in waves if it has one; --region narrows it to one region.
    A region that cannot be read says so in its section, and the command exits 1.
    JSON then has `regions` (region -> the status, or `error`) and `waves`.
    """
    validation.service_name(service)
    rollout_status(wiring_from(options), service, output)


@rollout.command(short_help="Follow a service's rollout until it ends.")
@click.argument("service")
@follow_options
@output_option
@aws_options
def watch(service: str, interval: float, timeout: float, output: str, **options: Any) -> None:
    """Redraw SERVICE's rollout status until the rollout completes or stops.

    Exits 0 when it completed with every instance on its assignment, 1 when it stopped,
    was reverted, left failed instances, or did not end within --timeout. Weights stored
    just before (or as) the watch begins are followed once the scheduler takes them up.
    With `--output json`, prints one JSON line per poll.
    """
    validation.service_name(service)
    wiring = wiring_from(options)
    watch_rollout(wiring, service, interval=interval, timeout=timeout, output=output)


# --- steering -------------------------------------------------------------------------


def operator_name() -> str:
    """Who ran the command, for the history: the login name, as far as the OS knows it."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor in the passwd file
        return "an unknown operator"


def parse_reason(text: str | None) -> str | None:
    if text is None:
        return None
    reason = text.strip()
    if not reason or len(reason) > MAX_REASON or not reason.isprintable():
        raise ValidationError(
            f"invalid --reason {text[:40]!r}: give one line of 1 to {MAX_REASON} printable "
            "characters"
        )
    return reason


def reason_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--reason", metavar="TEXT", help="Why, for the service history (one line)")(
        command
    )


def _report(
    change: Change, output: str, message: str, *, region: str, one_line: bool = False
) -> None:
    """What a steering command did; `one_line` when JSON poll lines follow (`--wait`).
    Steering acts on one region's rollout (each region has its own): for a service of
    several regions the message says which, and how to steer the others."""
    regions = change.service.regions
    if len(regions) > 1:
        others = ", ".join(r for r in regions if r != region)
        message += f" (in {region} only; {change.service.name} is also in {others}: --region)"
    if change.unwoken is not None:
        warn_unwoken(change.unwoken)
    if output == "json":
        stored = change.service
        (print_json_line if one_line else print_json)(
            {
                "service": stored.name,
                "changed": change.changed,
                "paused": stored.paused,
                "weights": weights_text(stored.weights, change.labels),
                "version": stored.version,
                "scheduler_woken": change.woken,
                "message": message,
                "region": region,
            }
        )
        return
    click.echo(message)


def set_paused(wiring: Wiring, name: str, paused: bool, reason: str | None, output: str) -> None:
    operations = wiring.operations
    pause_or_resume = operations.pause if paused else operations.resume
    current = find_service(wiring.store, name, wiring.settings.environment)
    change = pause_or_resume(current, by=operator_name(), reason=reason)
    if not change.changed:
        message = f"{name} is {'paused' if paused else 'resumed'} already; nothing changed"
    elif paused:
        message = (
            f"{change.note}: the scheduler moves nothing in {name} until `flotilla rollout resume`"
        )
    else:
        message = f"{change.note}: the scheduler carries on with {name}'s rollout"
    _report(change, output, message, region=wiring.region)


@rollout.command(short_help="Pause a service: the scheduler assigns nothing.")
@click.argument("service")
@reason_option
@output_option
@aws_options
def pause(service: str, reason: str | None, output: str, **options: Any) -> None:
    """Pause SERVICE: the scheduler assigns nothing until it is resumed.

    Deploys already running finish; no new ones start.
    """
    validation.service_name(service)
    why = parse_reason(reason)
    set_paused(wiring_from(options), service, True, why, output)


@rollout.command(short_help="Resume a service's rollout where it was paused.")
@click.argument("service")
@reason_option
@output_option
@aws_options
def resume(service: str, reason: str | None, output: str, **options: Any) -> None:
    """Resume SERVICE's rollout where it was paused."""
    validation.service_name(service)
    why = parse_reason(reason)
    set_paused(wiring_from(options), service, False, why, output)


@rollout.command(short_help="Skip what a rollout waits for: a bake, a gate, a pause.")
@click.argument("service")
@click.option("--full", is_flag=True, help="Skip every wait to the end: straight to the last step")
@output_option
@aws_options
def promote(service: str, full: bool, output: str, **options: Any) -> None:
    """Skip the current wait of SERVICE's rollout: its bake, its webhook gate or its pause
    step. With --full, go to the last step and skip its waits too.

    Deploys still follow --max-in-flight, and the alarms and the progress deadline still
    apply. Refused when no rollout is rolling, and when SERVICE is paused or held
    (`flotilla rollout resume` first).
    """
    validation.service_name(service)
    wiring = wiring_from(options)
    current = find_service(wiring.store, service, wiring.settings.environment)
    change = wiring.operations.promote(current, by=operator_name(), full=full)
    what = "every wait to the end of its rollout" if full else "the current wait of its rollout"
    message = f"promoted {service}: the scheduler skips {what} at its next pass"
    _report(change, output, message, region=wiring.region)


@rollout.command(short_help="Restore the weights of the last rollout without a failure.")
@click.argument("service")
@reason_option
@output_option
@aws_options
def revert(service: str, reason: str | None, output: str, **options: Any) -> None:
    """Restore SERVICE's last good weights: those of its last rollout without a failure.

    After a rollout that succeeded these are the current weights, and there is nothing
    to revert: to go back to the weights before them, use `flotilla rollout undo`.
    """
    validation.service_name(service)
    extra = parse_reason(reason)
    wiring = wiring_from(options)
    current = find_service(wiring.store, service, wiring.settings.environment)
    change = wiring.operations.revert(current, by=operator_name(), reason=extra)
    restored = weights_text(change.service.weights, change.labels)
    were = weights_text(change.before, change.labels)
    message = f"reverted {service} to its last good weights {restored} (were {were})"
    if change.service.paused:
        message += f"; {service} is paused: nothing moves until `flotilla rollout resume`"
    _report(change, output, message, region=wiring.region)


def parse_steps(text: str) -> int:
    """--steps, refused in one clear line."""
    steps = validation.whole_number(text)
    if steps is None or not 1 <= steps <= MAX_STEPS:
        raise ValidationError(
            f"invalid --steps {text[:40]!r}: give a whole number from 1 to {MAX_STEPS} "
            "(how many earlier settings of the weights to go back)"
        )
    return steps


@rollout.command(short_help="Go back to the weights a service had before.")
@click.argument("service")
@click.option(
    "--to",
    "to",
    metavar="REVISION",
    help="Back to the latest earlier weights in which REVISION (label or id prefix) had weight",
)
@click.option(
    "--steps",
    default="1",
    show_default=True,
    metavar="N",
    help="How many earlier settings of the weights to go back",
)
@click.option(
    "--stop-all",
    is_flag=True,
    help="Allow going back to weights that are all 0 (every instance is unassigned)",
)
@reason_option
@wait_options
@output_option
@aws_options
def undo(
    service: str, to: str | None, steps: str, stop_all: bool, reason: str | None, wait: bool,
    interval: float, timeout: float, output: str, **options: Any,
) -> None:  # fmt: skip
    """Go back to earlier weights of SERVICE, whether their rollout succeeded or not.

    The earlier weights are read from the service history (`flotilla history SERVICE`):
    --steps 1 (the default) is the weights before the current ones, --steps 2 the ones
    before those, and so on; --to REVISION the latest earlier weights in which REVISION
    had weight. Revisions weighted now but not then get weight 0. An undo is a change of
    weights like any other, so undoing twice goes back and forth between two settings.
    `rollout revert` is different: it restores the last weights whose rollout had no
    failure.
    """
    validation.service_name(service)
    count = parse_steps(steps)
    if to is not None and count != 1:
        raise ValidationError("give --to REVISION or --steps N, not both")
    extra = parse_reason(reason)
    wiring = wiring_from(options)
    current = find_service(wiring.store, service, wiring.settings.environment)
    change = wiring.operations.undo(
        current, by=operator_name(), steps=count, to=to, reason=extra, stop_all=stop_all
    )
    restored = weights_text(change.service.weights, change.labels)
    were = weights_text(change.before, change.labels)
    message = f"{service}'s weights are back to {restored} (were {were})"
    if change.service.paused:
        message += f"; {service} is paused: nothing moves until `flotilla rollout resume`"
    _report(change, output, message, region=wiring.region, one_line=wait)
    if wait:
        watch_rollout(
            wiring, service, interval=interval, timeout=timeout, output=output, changed_here=True
        )
