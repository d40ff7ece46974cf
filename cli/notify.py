"""Wake the scheduler after a change an operator made, without making the change depend on it.

The change is already stored when this runs: if the queue cannot be reached, the command
still succeeds and says that the scheduler will see the change at its next timed pass.
"""

from __future__ import annotations

import click

from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import FlotillaError
from flotilla.engine.ports import Event


def notify_scheduler(wiring: Wiring, service: str, kind: str = "service_changed") -> bool:
    """Send `kind` about `service`; True if sent, False (with a warning) if not."""
    try:
        wiring.events.send(Event(kind, service))
    except FlotillaError as failed:
        click.echo(
            f"warning: the change is stored, but the scheduler was not woken ({failed.message}); "
            "it applies the change at its next timed pass",
            err=True,
        )
        return False
    return True
