"""`flotilla rollout status|watch|pause|resume|revert`: see and steer a service's rollout.

Status and watch only read (see `cli.progress`). Pause, resume and revert are the
engine's operations (`engine.operations.steering`: a conditional change of the service
record, a history line saying who did it, then a wake-up for the scheduler that the change
does not depend on); these commands parse, call them and print what they did. The rollout
state itself is the scheduler's alone; nothing here writes it.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import click

from flotilla.cli.notify import warn_unwoken
from flotilla.cli.options import Seconds, aws_options, wiring_from
from flotilla.cli.output import output_option, print_json
from flotilla.cli.progress import (
    Progress,
    is_complete,
    print_progress,
    progress_json,
    read_progress,
)
from flotilla.cli.wiring import Wiring
from flotilla.engine import validation
from flotilla.engine.errors import FlotillaError, ValidationError
from flotilla.engine.operations.names import find_service, weights_text
from flotilla.engine.operations.steering import Change
from flotilla.engine.records import HistoryEntry, RolloutStatus

MAX_REASON = 200
ALARMING = frozenset({"rollout_stopped", "reverted"})


@click.group()
def rollout() -> None:
    """See, watch, pause, resume and revert a service's rollout."""


# --- reading --------------------------------------------------------------------------


def show_progress(progress: Progress, output: str, *, one_line: bool = False) -> None:
    if output == "json":
        if one_line:
            click.echo(json.dumps(progress_json(progress), sort_keys=True, default=str))
        else:
            print_json(progress_json(progress))
        return
    print_progress(progress)


@rollout.command()
@click.argument("service")
@output_option
@aws_options
def status(service: str, output: str, **options: Any) -> None:
    """Show SERVICE's rollout: weights, failures, a bar per revision and every live instance."""
    validation.service_name(service)
    wiring = wiring_from(options)
    record = find_service(wiring.store, service, wiring.settings.environment)
    show_progress(read_progress(wiring.store, record, wiring.clock.now()), output)


@rollout.command()
@click.argument("service")
@click.option(
    "--interval", type=Seconds(0.1), default=5.0, show_default=True, help="Time between polls"
)
@click.option(
    "--timeout",
    type=Seconds(0),
    default=3600.0,
    show_default=True,
    help="Give up (exit 1) if the rollout has not ended by then",
)
@output_option
@aws_options
def watch(service: str, interval: float, timeout: float, output: str, **options: Any) -> None:
    """Redraw SERVICE's rollout status until the rollout completes or stops.

    Exits 0 when it completed with every instance on its assignment, 1 when it stopped,
    was reverted, left failed instances, or did not end within --timeout. With
    `--output json`, prints one JSON line per poll.
    """
    validation.service_name(service)
    wiring = wiring_from(options)
    watch_rollout(wiring, service, interval=interval, timeout=timeout, output=output)


def watch_rollout(
    wiring: Wiring,
    name: str,
    *,
    interval: float,
    timeout: float,
    output: str,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Poll until the rollout ends; return if it completed cleanly, raise FlotillaError if not.

    Waits through `sleep` (the wiring's clock by default), never busily: every poll but
    the last is followed by a sleep of `interval` seconds (less only to meet the deadline).
    """
    store, clock = wiring.store, wiring.clock
    wait: Callable[[float], None] = clock.sleep if sleep is None else sleep
    environment = wiring.settings.environment
    record = find_service(store, name, environment)
    seen = {_key(entry) for entry in record.history}
    deadline = clock.now() + timedelta(seconds=timeout)
    polls = 0
    while True:
        if polls:
            record = find_service(store, name, environment)
        progress = read_progress(store, record, clock.now())
        if output == "text" and polls:
            if sys.stdout.isatty():
                click.clear()
            else:
                click.echo("")
        show_progress(progress, output, one_line=True)
        polls += 1
        if _ended(progress, seen):
            if output == "text":
                click.echo(f"rollout of {name} complete")
            return
        remaining = (deadline - clock.now()).total_seconds()
        if remaining <= 0:
            state = record.rollout_state.status.value + (", paused" if record.paused else "")
            raise FlotillaError(
                f"gave up watching {name} after {timeout:g} s: its rollout is still {state} "
                f"and goes on without this command; see `flotilla rollout status {name}`"
            )
        wait(min(interval, remaining))


def _key(entry: HistoryEntry) -> tuple[datetime, str, str]:
    return (entry.at, entry.kind, entry.reason)


def _ended(progress: Progress, seen: set[tuple[datetime, str, str]]) -> bool:
    """True if the rollout completed cleanly, False while it goes on; raises if it failed."""
    service = progress.service
    state = service.rollout_state
    if not progress.in_sync:
        return False  # new weights the scheduler has not taken up yet
    if state.status is RolloutStatus.STOPPED:
        raise FlotillaError(
            f"the rollout of {service.name} stopped: {state.reason or 'no reason recorded'}; "
            f"see `flotilla history {service.name}`"
        )
    if not is_complete(progress):
        return False
    # A rollout that reached its weights only because it was reverted did not succeed.
    started = state.started_at
    alarms = [
        entry
        for entry in service.history
        if entry.kind in ALARMING
        and (_key(entry) not in seen or (started is not None and entry.at >= started))
    ]
    if alarms:
        raise FlotillaError(
            f"the rollout of {service.name} was stopped and reverted ({alarms[-1].reason}); "
            f"see `flotilla history {service.name}`"
        )
    if progress.failed:
        raise FlotillaError(
            f"the rollout of {service.name} completed, but {progress.failed} instance(s) failed "
            f"to deploy and run their previous revision; see `flotilla history {service.name}`"
        )
    return True


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


def _report(change: Change, output: str, message: str) -> None:
    if change.unwoken is not None:
        warn_unwoken(change.unwoken)
    if output == "json":
        stored = change.service
        print_json(
            {
                "service": stored.name,
                "changed": change.changed,
                "paused": stored.paused,
                "weights": weights_text(stored.weights, change.labels),
                "version": stored.version,
                "scheduler_woken": change.woken,
                "message": message,
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
    _report(change, output, message)


@rollout.command()
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


@rollout.command()
@click.argument("service")
@reason_option
@output_option
@aws_options
def resume(service: str, reason: str | None, output: str, **options: Any) -> None:
    """Resume SERVICE's rollout where it was paused."""
    validation.service_name(service)
    why = parse_reason(reason)
    set_paused(wiring_from(options), service, False, why, output)


@rollout.command()
@click.argument("service")
@reason_option
@output_option
@aws_options
def revert(service: str, reason: str | None, output: str, **options: Any) -> None:
    """Restore SERVICE's last good weights: those of its last rollout without a failure."""
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
    _report(change, output, message)
