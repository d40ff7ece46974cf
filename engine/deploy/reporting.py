"""The end of a deploy, reported to the scheduler as an event (an unassignment too: its
`revision` is empty)."""

from __future__ import annotations

import logging

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.errors import FlotillaError
from flotilla.engine.ports import Event, EventQueue

log = logging.getLogger(__name__)


def report_finished(events: EventQueue, checkpoint: DeployCheckpoint) -> None:
    """One `deploy_finished` or `deploy_failed` event; a lost one is only logged, since the
    scheduler also reads outcomes from the checkpoints on its timer."""
    kind = "deploy_finished" if checkpoint.error is None else "deploy_failed"
    detail = {
        "deploy_id": checkpoint.id,
        "instance_id": checkpoint.instance_id,
        "revision": checkpoint.to_revision or "",
        "outcome": str(checkpoint.outcome),
        "reason": checkpoint.error or "",
    }
    try:
        events.send(Event(kind, checkpoint.service, detail))
    except FlotillaError as unsent:
        log.warning("could not report the end of deploy %s: %s", checkpoint.id, unsent.message)
