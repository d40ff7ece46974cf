"""Wake the scheduler after a change an operator made, without making the change depend on it.

The change is already stored when this runs: if the queue cannot be reached, the command
still succeeds and says that the scheduler will see the change at its next timed pass.
The rule is the engine's (`engine.operations.steering.wake_scheduler`); this module only
says so to the operator.
"""

from __future__ import annotations

import click

from flotilla.cli.wiring import Wiring
from flotilla.engine.operations.steering import wake_scheduler


def notify_scheduler(wiring: Wiring, service: str) -> bool:
    """Send `service_changed` about `service`; True if sent, False (with a warning) if not."""
    unwoken = wake_scheduler(wiring.events_on_first_use, service)
    if unwoken is not None:
        warn_unwoken(unwoken)
    return unwoken is None


def warn_unwoken(why: str) -> None:
    """The warning for a change that is stored but did not wake the scheduler."""
    click.echo(
        f"warning: the change is stored, but the scheduler was not woken ({why}); "
        "it applies the change at its next timed pass",
        err=True,
    )
