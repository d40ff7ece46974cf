"""A load balancer in memory that takes time like a real one (on the injected clock).

moto shows an instance healthy at once and never drains (DESIGN.md), so the timing of
drains and health checks is tested here, and this twin passes the same contract suite
as the ELB adapters (tests/contract/test_load_balancer.py):

- after `register` an instance is INITIAL for `health_seconds`, then HEALTHY; one marked
  with `never_healthy` turns UNHEALTHY instead, and stays so until `heal` (then it is
  INITIAL for `health_seconds` again, as a real one needs several passing checks);
- after `deregister` a registered instance is DRAINING for `drain_seconds`, then UNUSED
  (at once with `drain_seconds=0`, as a real one with no open connections);
- registering a registered instance keeps its health-check clock; registering a draining
  one cancels the drain and starts its health checks again; deregistering an
  unregistered one does nothing.

Faults for tests: `fail_next(n)` makes the next n calls raise `TransientError`, as a
throttled API would (or any given error); `delete()` makes every later call raise the
`ConfigurationError` that a load balancer that does not exist gives. `calls` records every
call, failed ones included.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from flotilla.engine.clock import Clock
from flotilla.engine.errors import ConfigurationError, FlotillaError, TransientError
from flotilla.engine.ports import TargetState


class MemoryLoadBalancer:
    def __init__(
        self,
        clock: Clock,
        *,
        drain_seconds: float = 0,
        health_seconds: float = 0,
        name: str = "memory",
    ) -> None:
        self._clock = clock
        self.name = name
        self._drain = timedelta(seconds=drain_seconds)
        self._health = timedelta(seconds=health_seconds)
        self._mutex = threading.Lock()
        self._registered: dict[str, datetime] = {}  # instance -> when registered
        self._draining: dict[str, datetime] = {}  # instance -> when its drain ends
        self._never_healthy: set[str] = set()
        self._failures_left = 0
        self._failure: FlotillaError | None = None
        self._deleted = False
        self.calls: list[tuple[str, str]] = []  # (operation, instance id)

    # Fault switches for tests.

    def fail_next(self, calls: int, error: FlotillaError | None = None) -> None:
        """The next `calls` calls raise `error` (a `TransientError` by default)."""
        with self._mutex:
            self._failures_left = calls
            self._failure = error

    def never_healthy(self, instance_id: str) -> None:
        """Health checks of this instance fail from now on: UNHEALTHY once registered."""
        with self._mutex:
            self._never_healthy.add(instance_id)

    def heal(self, instance_id: str) -> None:
        """Health checks of this instance pass again: HEALTHY after `health_seconds` more."""
        with self._mutex:
            self._never_healthy.discard(instance_id)
            if instance_id in self._registered:
                self._registered[instance_id] = self._clock.now()

    def delete(self) -> None:
        """The load balancer is gone: every later call is a `ConfigurationError`."""
        with self._mutex:
            self._deleted = True

    def registered(self) -> set[str]:
        """The instances registered now (draining ones are not)."""
        with self._mutex:
            return set(self._registered)

    # The `LoadBalancer` port.

    def deregister(self, instance_id: str) -> None:
        with self._mutex:
            self._enter("deregister", instance_id)
            if self._registered.pop(instance_id, None) is not None and self._drain:
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
            registered_at = self._registered.get(instance_id)
            if registered_at is not None:
                if now - registered_at < self._health:
                    return TargetState.INITIAL
                if instance_id in self._never_healthy:
                    return TargetState.UNHEALTHY
                return TargetState.HEALTHY
            drain_ends = self._draining.get(instance_id)
            if drain_ends is not None:
                if now < drain_ends:
                    return TargetState.DRAINING
                del self._draining[instance_id]
            return TargetState.UNUSED

    def _enter(self, operation: str, instance_id: str) -> None:
        self.calls.append((operation, instance_id))
        if self._deleted:
            raise ConfigurationError(
                f"{operation} {instance_id}: there is no load balancer named {self.name!r}; "
                "create it, or change the load balancer of the service"
            )
        if self._failures_left > 0:
            self._failures_left -= 1
            raise self._failure or TransientError(
                f"{operation} {instance_id} on load balancer {self.name!r}: throttled "
                "(injected); will retry"
            )
