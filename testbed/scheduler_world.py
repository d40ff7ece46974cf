"""Services and instances on any store, for the scheduler's tests and its benchmark:
revision ids, a service with a rollout policy, registered instances, and a store that
counts the calls made through it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flotilla.engine.clock import Clock
from flotilla.engine.ports import StateStore
from flotilla.engine.records import FailureAction, Instance, RolloutPolicy, Service

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
    failure_action: FailureAction = FailureAction.REVERT,
) -> Service:
    return store.create_service(
        Service(
            name=name,
            rollout=RolloutPolicy(max_in_flight, max_failures, failure_action),
            weights={V1: 100} if weights is None else weights,
        )
    )


def register(store: StateStore, clock: Clock, service: str, count: int, prefix: str = "i") -> None:
    now = clock.now()
    for n in range(count):
        instance = Instance(f"{prefix}-{n:03d}", service, "test", now, now)
        store.register_instance(instance, expires_at=now + LONG)


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
