"""`flotilla service delete`: at once when nothing runs, else unassign the instances first.

A service none of whose instances (live or not) runs or is assigned a revision, and with
no unfinished deploy, is deleted at once (conditionally on the version read, or on
`--expected-version`). Any other is marked as being deleted (`engine.updates.mark_deleting`)
and the scheduler woken: it assigns every instance no revision, their agents run their
unassignment deploys, and the scheduler deletes the record once they are done
(`scheduler.deleting`). `--wait` then polls until the record is gone, with a line each time
the number of instances still being unassigned changes; it fails (exit 1) once only failed
unassignments hold the deletion, or at `--timeout`. The deletion goes on either way.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import click

from flotilla.cli.notify import notify_scheduler
from flotilla.cli.rollout_waits import read_inputs
from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import ConflictError, FlotillaError, NotFoundError
from flotilla.engine.liveness import DEFAULT_INSTANCE_TTL
from flotilla.engine.operations.names import find_service
from flotilla.engine.records import Service
from flotilla.engine.updates import deletion_mark, mark_deleting
from flotilla.scheduler.deleting import unassigning


def delete_service(
    wiring: Wiring,
    name: str,
    *,
    expected_version: int | None,
    wait: bool,
    interval: float,
    timeout: float,
    sleep: Callable[[float], None] | None = None,
    where: str = "",
) -> None:
    """`where`: what each line begins with (`eu-west-1: ` for one of several regions)."""
    store, clock = wiring.store, wiring.clock
    current = find_service(store, name, wiring.settings.environment)
    if expected_version is not None and current.version != expected_version:
        raise ConflictError(
            f"service {name!r} changed meanwhile (version {current.version}, expected "
            f"{expected_version}): nothing was deleted; see `flotilla service show {name}`",
            current=current,
        )
    if not current.deleting and _holds_nothing(wiring, current):
        store.delete_service(name, expected_version=current.version)
        click.echo(f"{where}deleted service {name}")
        return
    if current.deleting:
        click.echo(f"{where}service {name} is already being deleted")
    else:
        if expected_version is not None:  # exactly that version, or nothing
            store.update_service(deletion_mark(current, clock.now()))
        else:
            mark_deleting(store, name, clock.now(), current=current)
        notify_scheduler(wiring, name)
        click.echo(
            f"{where}service {name} is being deleted: its instances are being unassigned "
            "(they leave the load balancer and stop and remove its units); the scheduler "
            f"deletes the record when they are done. `flotilla rollout status {name}` shows them"
        )
    if wait:
        wait_until_deleted(wiring, name, interval, timeout, sleep or clock.sleep, where=where)


def _holds_nothing(wiring: Wiring, service: Service) -> bool:
    """No instance (live or dead) runs or is assigned anything, and no deploy is unfinished."""
    store = wiring.store
    instances = store.list_instances(service.name)
    if any(i.current_revision is not None or i.assigned_revision is not None for i in instances):
        return False
    return all(deploy.finished for deploy in store.list_deploys(service.name))


def wait_until_deleted(
    wiring: Wiring,
    name: str,
    interval: float,
    timeout: float,
    sleep: Callable[[float], None],
    *,
    where: str = "",
) -> None:
    """Poll until the record is gone, saying how many instances are still unassigned."""
    store, clock = wiring.store, wiring.clock
    deadline = clock.now() + timedelta(seconds=timeout)
    said: tuple[int, int] | None = None
    while True:
        try:
            service = store.get_service(name)
        except NotFoundError:
            click.echo(f"{where}deleted service {name}")
            return
        live, _dead, deploys = read_inputs(store, service, clock.now(), DEFAULT_INSTANCE_TTL)
        counts = unassigning(live, deploys)
        in_flight, failed = counts
        if counts != said:
            click.echo(f"{where}{in_flight} instance(s) being unassigned, {failed} failed")
            said = counts
        if failed and not in_flight:
            raise FlotillaError(
                f"the unassignment of {failed} instance(s) of {name} failed; they still run "
                f"their units and the deletion waits for them: see `flotilla rollout status "
                f"{name}` and `flotilla history {name}`"
            )
        remaining = (deadline - clock.now()).total_seconds()
        if remaining <= 0:
            raise FlotillaError(
                f"gave up waiting after {timeout:g} s: {name} is still being deleted and the "
                f"deletion goes on without this command; see `flotilla rollout status {name}`"
            )
        sleep(min(interval, remaining))
