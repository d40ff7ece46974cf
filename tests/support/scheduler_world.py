"""A small world for scheduler tests: services, instances and fake agents on any store.

Services, instances and the counting store come from the testbed
(testbed/scheduler_world.py), which the scheduler's benchmark shares.

`FakeAgents` does what real agents do to the records, and nothing else: it creates the
deploy of each instance's assignment (under the runner's deploy id; assigned none while
it runs a revision, an unassignment deploy), finishes it with a chosen outcome and sets
the instance's current revision as the runner would. Starting
and finishing are separate, so tests can hold deploys in flight.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import timedelta

from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.clock import Clock
from flotilla.engine.errors import AlreadyExistsError
from flotilla.engine.liveness import is_alive
from flotilla.engine.ports import StateStore
from flotilla.engine.records import Instance, deploy_id_for
from testbed.scheduler_world import LONG, V1, V2, V3, CountingStore, make_service, register

__all__ = [
    "LONG",
    "V1",
    "V2",
    "V3",
    "CountingStore",
    "FakeAgents",
    "heartbeat",
    "make_service",
    "register",
]


def heartbeat(store: StateStore, clock: Clock, instance_ids: Iterable[str]) -> None:
    now = clock.now()
    for instance_id in instance_ids:
        store.record_heartbeat("api", instance_id, now, now + LONG)


class FakeAgents:
    """Agents of one service that deploy by writing records; `fails` picks failing deploys."""

    def __init__(
        self,
        store: StateStore,
        clock: Clock,
        service: str,
        *,
        fails: Callable[[DeployCheckpoint], bool] = lambda _deploy: False,
        ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        self.store = store
        self.clock = clock
        self.service = service
        self.fails = fails
        self.ttl = ttl
        self.max_in_flight_seen = 0
        self.deploys: Counter[str] = Counter()  # revision -> deploys started

    def _live(self) -> list[Instance]:
        now = self.clock.now()
        return [i for i in self.store.list_instances(self.service) if is_alive(i, now, self.ttl)]

    def start(self) -> list[DeployCheckpoint]:
        """Create the deploy of every new assignment (the agent's `runner.create`)."""
        started = []
        for instance in self._live():
            target = instance.assigned_revision
            if target == instance.current_revision:
                continue
            now = self.clock.now()
            checkpoint = DeployCheckpoint(
                id=deploy_id_for(instance),
                service=self.service,
                instance_id=instance.id,
                from_revision=instance.current_revision,
                to_revision=target,
                state="pending",
                machine_version=1,
                created_at=now,
                updated_at=now,
            )
            try:
                started.append(self.store.create_deploy(checkpoint))
                self.deploys[target or "none"] += 1
            except AlreadyExistsError:
                continue  # this assignment was deployed already (and maybe failed)
        running = sum(1 for d in self.store.list_deploys(self.service) if not d.finished)
        self.max_in_flight_seen = max(self.max_in_flight_seen, running)
        return started

    def finish(self, limit: int | None = None) -> list[DeployCheckpoint]:
        """Finish unfinished deploys (the oldest `limit`): success sets the current revision."""
        finished: list[DeployCheckpoint] = []
        for deploy in self.store.list_deploys(self.service):
            if deploy.finished:
                continue
            if limit is not None and len(finished) >= limit:
                break
            failing = self.fails(deploy)
            if not failing:
                self.store.set_current_revision(
                    deploy.service, deploy.instance_id, deploy.to_revision
                )
            finished.append(
                self.store.update_deploy(
                    dataclasses.replace(
                        deploy,
                        state="done",
                        updated_at=self.clock.now(),
                        outcome=Outcome.ROLLED_BACK if failing else Outcome.SUCCEEDED,
                        error="web.service exited with status 1" if failing else None,
                    )
                )
            )
        return finished

    def settle(self) -> None:
        self.start()
        self.finish()
