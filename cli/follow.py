"""Following a rollout until it ends: `rollout watch`, and `--wait` on the commands that
start one (`weights`, `rollout undo`).

One loop (`watch_rollout`) polls what `rollout status` reads (`cli.progress`) and decides
the outcome the same way for all of them: 0 when the rollout of the weights now stored
completed with every live instance on its assignment; a `FlotillaError` (exit 1) when it
stopped, was reverted, left failed instances, or had not ended by the deadline.

A rollout counts only once the scheduler has taken up the weights now stored (`in_sync`):
a change stored just before the first poll is followed, not mistaken for the end of the
rollout before it. A watch that finds a rollout already complete at its first poll reads
once more, `PICKUP_GRACE` later, before saying so: a change stored at the moment the
watch began (a script that starts `watch` and then `weights`, or two operators) is then
seen and followed too. Commands that stored the change themselves (`--wait`) skip that
second read: their change is in the first.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click

from flotilla.cli.options import Seconds
from flotilla.cli.output import print_json
from flotilla.cli.progress import (
    Progress,
    is_complete,
    print_progress,
    progress_json,
    read_progress,
)
from flotilla.cli.rollout_waits import gate_readings
from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import FlotillaError
from flotilla.engine.operations.names import find_service
from flotilla.engine.records import HistoryEntry, RolloutStatus

F = TypeVar("F", bound=Callable[..., Any])
ALARMING = frozenset({"rollout_stopped", "reverted"})  # history kinds: the rollout failed
PICKUP_GRACE = 1.0  # seconds between the two reads of a rollout complete at the first poll


def follow_options(command: F) -> F:
    """`--interval` and `--timeout`, as `rollout watch` and every `--wait` take them."""
    command = click.option(
        "--timeout",
        type=Seconds(0),
        default=3600.0,
        show_default=True,
        help="Give up (exit 1) if the rollout has not ended by then; it goes on regardless",
    )(command)
    return click.option(
        "--interval", type=Seconds(0.1), default=5.0, show_default=True, help="Time between polls"
    )(command)


def wait_options(command: F) -> F:
    """`--wait` (follow the rollout the change starts) with `--interval` and `--timeout`."""
    command = follow_options(command)
    return click.option(
        "--wait",
        is_flag=True,
        help="Then follow the rollout like `rollout watch` and exit with its outcome "
        "(0 complete; 1 stopped, reverted, failed instances or --timeout)",
    )(command)


def show_progress(progress: Progress, output: str, *, one_line: bool = False) -> None:
    if output == "json":
        if one_line:
            click.echo(json.dumps(progress_json(progress), sort_keys=True, default=str))
        else:
            print_json(progress_json(progress))
        return
    print_progress(progress)


def watch_rollout(
    wiring: Wiring,
    name: str,
    *,
    interval: float,
    timeout: float,
    output: str,
    sleep: Callable[[float], None] | None = None,
    changed_here: bool = False,
) -> None:
    """Poll until the rollout ends; return if it completed cleanly, raise FlotillaError if not.

    Waits through `sleep` (the wiring's clock by default), never busily: every poll but
    the last is followed by a sleep of `interval` seconds (less only to meet the deadline).
    `changed_here`: the caller stored the change to follow before calling (`--wait`).
    """
    store, clock = wiring.store, wiring.clock
    wait: Callable[[float], None] = clock.sleep if sleep is None else sleep
    environment = wiring.settings.environment
    record = find_service(store, name, environment)
    seen = {_key(entry) for entry in record.history}
    deadline = clock.now() + timedelta(seconds=timeout)
    polls = 0
    confirmed = changed_here
    first = True
    while True:
        if not first:
            record = find_service(store, name, environment)
        first = False
        readings = gate_readings(wiring, record)  # its alarms, for what it waits for
        progress = read_progress(store, record, clock.now(), readings=readings)
        ended = rollout_ended(progress, lambda entry: _key(entry) not in seen)
        if ended and not confirmed and polls == 0:
            # Complete before the watch began: read once more, in case a change was being
            # stored right now (the module's docstring).
            confirmed = True
            wait(min(PICKUP_GRACE, timeout))
            continue
        confirmed = True
        if output == "text" and polls:
            if sys.stdout.isatty():
                click.clear()
            else:
                click.echo("")
        show_progress(progress, output, one_line=True)
        polls += 1
        if ended:
            if output == "text":
                click.echo(f"rollout of {name} complete")
            if not progress.instances and record.weights:
                click.echo(
                    f"note: {name} has no live instance, so nothing runs these weights; "
                    f"agents join it with `flotilla agent --service {name}`",
                    err=True,
                )
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


def rollout_ended(progress: Progress, is_new: Callable[[HistoryEntry], bool]) -> bool:
    """True if the rollout completed cleanly, False while it goes on; raises if it failed.
    `is_new`: a history entry written since the caller began to follow the rollout (a
    revert before that, or before the rollout started, is not this rollout's failure)."""
    service = progress.service
    state = service.rollout_state
    if not progress.in_sync:
        return False  # new weights the scheduler has not taken up yet
    if state.status in (RolloutStatus.STOPPED, RolloutStatus.HELD):
        raise FlotillaError(
            f"the rollout of {service.name} {state.status.value}: "
            f"{state.reason or 'no reason recorded'}; see `flotilla history {service.name}`"
        )
    if not is_complete(progress):
        return False
    # A rollout that reached its weights only because it was reverted did not succeed.
    started = state.started_at
    alarms = [
        entry
        for entry in service.history
        if entry.kind in ALARMING
        and (is_new(entry) or (started is not None and entry.at >= started))
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
