"""A load balancer in memory that takes time like a real one (on the injected clock).

moto shows an instance healthy at once and never drains (DESIGN.md), so timing of drains
and health checks is tested here: after `deregister` an instance drains for
`drain_seconds`, after `register` it is `initial` for `health_seconds`, then healthy,
unless it was told never to become healthy. `fail_next(n)` makes the next n calls raise
`TransientError`, as a throttled API would.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from flotilla.engine.clock import Clock
from flotilla.engine.errors import TransientError
from flotilla.engine.ports import TargetState


class MemoryLoadBalancer:
    def __init__(self, clock: Clock, *, drain_seconds: float = 0, health_seconds: float = 0):
        self._clock = clock
        self._drain = timedelta(seconds=drain_seconds)
        self._health = timedelta(seconds=health_seconds)
        self._mutex = threading.Lock()
        self._registered: dict[str, datetime] = {}  # instance -> when registered
        self._draining: dict[str, datetime] = {}  # instance -> when the drain ends
        self._never_healthy: set[str] = set()
        self._failures_left = 0
        self.calls: list[tuple[str, str]] = []

    def fail_next(self, calls: int) -> None:
        with self._mutex:
            self._failures_left = calls

    def never_healthy(self, instance_id: str) -> None:
        with self._mutex:
            self._never_healthy.add(instance_id)

    def _enter(self, operation: str, instance_id: str) -> None:
        self.calls.append((operation, instance_id))
        if self._failures_left > 0:
            self._failures_left -= 1
            raise TransientError(f"load balancer {operation}: throttled (injected)")

    def deregister(self, instance_id: str) -> None:
        with self._mutex:
            self._enter("deregister", instance_id)
            if self._registered.pop(instance_id, None) is not None:
                self._draining[instance_id] = self._clock.now() + self._drain

    def register(self, instance_id: str) -> None:
        with self._mutex:
            self._enter("register", instance_id)
            self._draining.pop(instance_id, None)
            self._registered.setdefault(instance_id, self._clock.now())

    def state(self, instance_id: str) -> TargetState:
        with self._mutex:
            self._enter("state", instance_id)
            now = self._clock.now()
            if instance_id in self._registered:
                if instance_id in self._never_healthy:
                    return TargetState.UNHEALTHY
                if now - self._registered[instance_id] < self._health:
                    return TargetState.INITIAL
                return TargetState.HEALTHY
            if instance_id in self._draining and now < self._draining[instance_id]:
                return TargetState.DRAINING
            return TargetState.UNUSED

    def registered(self) -> set[str]:
        with self._mutex:
            return set(self._registered)
