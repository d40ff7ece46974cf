"""A small world for scheduler tests: services, instances and fake agents on any store.

`FakeAgents` does what real agents do to the records, and nothing else: it creates the
deploy of each instance's assignment (under the runner's deploy id), finishes it with a
chosen outcome and sets the instance's current revision as the runner would. Starting
and finishing are separate, so tests can hold deploys in flight.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.clock import Clock
from flotilla.engine.errors import AlreadyExistsError
from flotilla.engine.liveness import is_alive
from flotilla.engine.ports import StateStore
from flotilla.engine.records import Instance, RolloutPolicy, Service, deploy_id_for

V1 = "1" * 64
V2 = "2" * 64
V3 = "3" * 64
LONG = timedelta(days=1)


def make_service(
    store: StateStore,
    name: str = "api",
    weights: dict[str, int] | None = None,
    *,
    max_in_flight: str = "1",
    max_failures: int = 1,
    auto_revert: bool = True,
) -> Service:
    return store.create_service(
        Service(
            name=name,
            rollout=RolloutPolicy(max_in_flight, max_failures, auto_revert),
            weights={V1: 100} if weights is None else weights,
        )
    )


def register(store: StateStore, clock: Clock, service: str, count: int, prefix: str = "i") -> None:
    now = clock.now()
    for n in range(count):
        instance = Instance(f"{prefix}-{n:03d}", service, "test", now, now)
        store.register_instance(instance, expires_at=now + LONG)


def heartbeat(store: StateStore, clock: Clock, instance_ids: Iterable[str]) -> None:
    now = clock.now()
    for instance_id in instance_ids:
        store.record_heartbeat(instance_id, now, now + LONG)


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
            if target is None or target == instance.current_revision:
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
                self.deploys[target] += 1
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
                self.store.set_current_revision(deploy.instance_id, deploy.to_revision)
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


class CountingStore:
    """A `StateStore` that counts the calls made through it, by method name."""

    WRITES = frozenset(
        {
            "create_service",
            "update_service",
            "delete_service",
            "set_assignment",
            "register_instance",
            "record_heartbeat",
            "set_current_revision",
            "create_deploy",
            "update_deploy",
        }
    )

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.before: dict[str, Callable[..., None]] = {}  # hooks run before a call

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            hook = self.before.get(name)
            if hook is not None:
                hook(*args, **kwargs)
            return method(*args, **kwargs)

        return counted

    @property
    def writes(self) -> int:
        return sum(n for name, n in self.calls.items() if name in self.WRITES)

    def reset(self) -> None:
        self.calls.clear()
