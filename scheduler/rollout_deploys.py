"""The deploys of each service's current rollout, as the scheduler's passes read them.

A pass needs a rollout's deploys to count its failures and to tell which instances are
still deploying. Listing them all at every pass reads the whole rollout again each time
(16 MB at a pass late in a 10 000-instance rollout), so they are kept between passes: a
finished checkpoint never changes, and each pass reads only the deploys created since
the previous one (with a margin, for the index's eventual consistency and for clocks)
and the unfinished ones again. Listings are brief (no step records: a pass needs where
each deploy stands, not how it got there). What is kept is dropped when the rollout
changes (another start, a new leader: the first pass of a leader lists the rollout
whole) or completes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.errors import NotFoundError
from flotilla.engine.ports import StateStore
from flotilla.engine.records import Service
from flotilla.scheduler.phases import deploy_window, needs_deploy_list

# Deploys created this long before the last listing are listed again: the index behind
# the listing may not show a new checkpoint at once, and writers' clocks differ a little.
RELIST_MARGIN = timedelta(seconds=60)


@dataclass
class _Known:
    window: datetime | None  # the rollout they belong to (its start)
    listed_at: datetime  # when the last listing began
    deploys: dict[str, DeployCheckpoint] = field(default_factory=dict)


class RolloutDeploys:
    """One scheduler's memory of its services' rollout deploys."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._known: dict[str, _Known] = {}

    def of(self, service: Service, now: datetime) -> dict[str, DeployCheckpoint]:
        """The deploys of `service`'s rollout (empty when none is under way), by id."""
        if not needs_deploy_list(service):
            self._known.pop(service.name, None)
            return {}
        window = deploy_window(service)
        known = self._known.get(service.name)
        if known is None or known.window != window:
            listed = self._store.list_deploys(service.name, since=window, brief=True)
            known = _Known(window, now, {d.id: d for d in listed})
            self._known[service.name] = known
            return dict(known.deploys)
        since = known.listed_at - RELIST_MARGIN
        if window is not None:
            since = max(since, window)
        listed = self._store.list_deploys(service.name, since=since, brief=True)
        fresh = {d.id: d for d in listed}
        for deploy_id, deploy in list(known.deploys.items()):
            if not deploy.finished and deploy_id not in fresh:
                with contextlib.suppress(NotFoundError):
                    fresh[deploy_id] = self._store.get_deploy(deploy_id)
        known.deploys.update(fresh)
        known.listed_at = now
        return dict(known.deploys)

    def forget_service(self, name: str) -> None:
        """Drop one service's deploys (its record is gone)."""
        self._known.pop(name, None)

    def forget(self) -> None:
        """Drop everything (leadership was lost: the next leader reads afresh)."""
        self._known.clear()
