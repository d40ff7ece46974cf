"""Events out: a service's rollout decisions and its deploys' outcomes, published to the
environment's topic (SNS) for other systems (docs/events.md has the schema).

What is published: every entry of the service history (the scheduler's own, such as
`rollout_started`, `step_reached`, `held`, `rollout_stopped` (published as
`rollout_failed`), `reverted`, `rollout_complete`, and an operator's `paused`, `resumed`,
`reverted`, `undone`, `promoted`) and the outcome of every deploy the scheduler watches
(those of a rollout, and of an instance it assigned outside one while it watched it).

Delivery is at least once, never blocking a rollout: events are published after the pass
stored its decisions, oldest first; one that cannot be published is tried again at the
next pass of the service, and the ones after it wait (the leader keeps up to
`MAX_PENDING` of them per service, and does not take the service for quiet while it
has any; a leader that dies with events unpublished loses the deploy outcomes among
them, while the history entries are found again by its successor). The leader remembers what it
published; a new leader starts a minute before the time stored in the rollout state
(`announced_until`, written with the service record whenever the scheduler writes it
anyway), so it may publish a few events again: each has an `id` that stays the same, by
which consumers drop repeats. A scheduler that leads for the first time publishes what
happened in the last minute.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.clock import to_epoch_ms
from flotilla.engine.errors import FlotillaError
from flotilla.engine.ports import EventTopic, Notice, StateStore
from flotilla.engine.records import HistoryEntry, Service

log = logging.getLogger(__name__)

MARGIN = timedelta(minutes=1)
MAX_PENDING = 1000  # unpublished events kept per service while the topic fails
# History kinds as events call them (the others keep their name).
EVENT_KINDS = {
    "paused": "rollout_paused",
    "resumed": "rollout_resumed",
    "held": "rollout_held",
    "rollout_stopped": "rollout_failed",
    "reverted": "rollout_reverted",
    "undone": "rollout_undone",
    "promoted": "rollout_promoted",
    "deleting": "service_deleting",
}
_STEP = re.compile(r"\bstep (\d+) of (\d+)\b")


@dataclass
class _Seen:
    cutoff: datetime  # nothing at or before this is published (again)
    sent: dict[str, datetime] = field(default_factory=dict)  # notice id -> its time
    until: datetime | None = None  # the latest time published
    # Found but not published yet (the topic failed): kept, since a finished rollout's
    # deploys are not read again.
    pending: dict[str, Notice] = field(default_factory=dict)


class Announcer:
    """One leader's publishing of every service's events (the module's doc)."""

    def __init__(self, topic: EventTopic, store: StateStore) -> None:
        self._topic = topic
        self._store = store
        self._seen: dict[str, _Seen] = {}

    def published_until(self, service: str) -> datetime | None:
        """What to store as the service's `announced_until` with its next write."""
        seen = self._seen.get(service)
        return None if seen is None else seen.until

    def behind(self, service: str) -> bool:
        """Whether `service` has events that could not be published yet: the scheduler
        must not take it for quiet (and skip it) until they are."""
        seen = self._seen.get(service)
        return seen is not None and bool(seen.pending)

    def forget(self) -> None:
        """A new term: start again from what the rollout states say."""
        self._seen.clear()

    def announce(self, service: Service, deploys: Iterable[DeployCheckpoint], now: datetime) -> int:
        """Publish what `service` (as stored now) and `deploys` hold that was not published
        yet; returns how many were."""
        seen = self._seen.get(service.name)
        if seen is None:
            stored = service.rollout_state.announced_until
            seen = _Seen(cutoff=(stored or now) - MARGIN)
            self._seen[service.name] = seen
        for notice in [
            *(_entry_notice(service, e) for e in service.history if e.at > seen.cutoff),
            *(_deploy_notice(d) for d in deploys if d.finished and d.updated_at > seen.cutoff),
        ]:
            if notice.id not in seen.sent:
                seen.pending[notice.id] = notice
        if len(seen.pending) > MAX_PENDING:
            dropped = sorted(seen.pending.values(), key=lambda n: (n.at, n.id))[:-MAX_PENDING]
            log.warning("dropped %d unpublished events of %s", len(dropped), service.name)
            for notice in dropped:
                del seen.pending[notice.id]
        if not seen.pending:
            return 0
        labels = {r.id: r.label for r in self._store.list_revisions(service.name)}
        published = 0
        # Oldest first; at one time, the history's entries (in their order) before the
        # deploys that ended then (a stable sort keeps the order they were found in).
        for notice in sorted(seen.pending.values(), key=lambda n: (n.at, n.deploy is not None)):
            try:
                self._topic.publish(_labelled(notice, labels))
            except FlotillaError as failed:
                log.warning(
                    "could not publish %s of %s (tried again at its next pass): %s",
                    notice.kind,
                    service.name,
                    failed.message,
                )
                break
            del seen.pending[notice.id]
            seen.sent[notice.id] = notice.at
            seen.until = notice.at if seen.until is None else max(seen.until, notice.at)
            published += 1
        if seen.until is not None:  # what is well past needs no id kept to drop repeats
            seen.cutoff = max(seen.cutoff, seen.until - MARGIN)
            seen.sent = {k: at for k, at in seen.sent.items() if at > seen.cutoff}
        return published

    def deleted(self, service: Service, now: datetime) -> int:
        """Publish that the service's record went (after its instances were unassigned);
        1 if published. Tried once: with the record gone there is no next pass."""
        notice = Notice(
            id=f"{service.name}/service_deleted/{to_epoch_ms(now)}",
            kind="service_deleted",
            service=service.name,
            at=now,
            reason="every instance was unassigned; the service record was deleted",
        )
        self._seen.pop(service.name, None)
        try:
            self._topic.publish(notice)
        except FlotillaError as failed:
            log.warning("could not publish service_deleted of %s: %s", service.name, failed.message)
            return 0
        return 1


def _entry_notice(service: Service, entry: HistoryEntry) -> Notice:
    kind = EVENT_KINDS.get(entry.kind, entry.kind)
    found = _STEP.search(entry.reason) if kind in ("step_reached", "rollout_started") else None
    step = None if found is None else {"index": int(found[1]), "of": int(found[2])}
    # Entries of one pass share a millisecond (e.g. two steps reached): the digest of
    # what they say tells them apart, and stays the same for every delivery.
    said = hashlib.sha256(f"{entry.reason}\n{sorted(entry.weights.items())}".encode())
    return Notice(
        id=f"{service.name}/{entry.kind}/{to_epoch_ms(entry.at)}/{said.hexdigest()[:12]}",
        kind=kind,
        service=service.name,
        at=entry.at,
        reason=entry.reason,
        weights=dict(entry.weights),
        step=step,
    )


def _deploy_notice(deploy: DeployCheckpoint) -> Notice:
    outcome = deploy.outcome.value if deploy.outcome is not None else "unknown"
    return Notice(
        id=f"{deploy.service}/deploy/{deploy.id}/{outcome}",
        kind=f"deploy_{outcome}",
        service=deploy.service,
        at=deploy.updated_at,
        reason=deploy.error or "",
        deploy={
            "id": deploy.id,
            "instance": deploy.instance_id,
            "from_revision": deploy.from_revision,
            "to_revision": deploy.to_revision,
            "outcome": outcome,
            "failed_in": deploy.failed_in,
            "error": deploy.error,
        },
    )


def _labelled(notice: Notice, labels: dict[str, str]) -> Notice:
    revisions = set(notice.weights)
    if notice.deploy is not None:
        revisions |= {
            r for r in (notice.deploy["from_revision"], notice.deploy["to_revision"]) if r
        }
    shown = {r: labels[r] for r in sorted(revisions) if r in labels}
    return Notice(
        notice.id, notice.kind, notice.service, notice.at, notice.reason,
        notice.weights, shown, notice.step, notice.deploy,
    )  # fmt: skip
