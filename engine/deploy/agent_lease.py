"""An agent's hold on its instance, kept on the instance's own item.

Only one agent process may run an instance's deploys. The hold is a lease like every other
Flotilla lease (engine/leases.py: taken, renewed once a third has passed, released on
exit), but it is stored on the instance item itself rather than in the locks table, so that
one write does three things: taking the hold registers the instance, and renewing it is the
heartbeat that tells the scheduler the instance is alive. An idle agent therefore writes
once per third of its lease, and nothing else.

A successor started on the same machine (systemd restarting an agent that was killed) need
not wait out its predecessor's lease: the holder's identity says which process on which
boot holds the instance, and `proven_dead` (adapters/process_identity.py on a real machine)
tells whether that process is gone; if it is, the successor takes over at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from flotilla.engine.clock import Clock
from flotilla.engine.errors import ConflictError, LockLostError, NotFoundError
from flotilla.engine.liveness import expiry_for
from flotilla.engine.ports import StateStore
from flotilla.engine.records import AgentClaim, Instance, Lease

# Whether the agent process with this identity is known to be gone (False: alive, or
# cannot tell, e.g. it ran on another machine).
ProvenDead = Callable[[str], bool]


def lock_name(instance_id: str) -> str:
    return f"agent/{instance_id}"


class InstanceLease:
    """The `LockService` of one instance's agent hold, on the instance item.

    `acquire` registers the instance (creating it, or refreshing it) with the claim;
    `renew` is the heartbeat; the instance as last registered is kept in `registered`.
    """

    def __init__(
        self,
        store: StateStore,
        clock: Clock,
        *,
        instance: Instance,
        instance_ttl: timedelta,
        proven_dead: ProvenDead,
        wake_address: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._template = instance
        self._ttl = instance_ttl
        self._proven_dead = proven_dead
        self._wake_address = wake_address  # recorded with every claim and heartbeat
        self.registered: Instance | None = None

    def acquire(self, name: str, owner: str, *, slots: int, lease: timedelta) -> Lease | None:
        self._check(name)
        now = self._clock.now()
        claim = AgentClaim(owner, now + lease, wake_address=self._wake_address())
        try:
            self.registered = self._register(claim)
        except ConflictError as held:
            current = held.current
            if not isinstance(current, Instance) or current.service != self._template.service:
                raise  # born into another service: not a question of who holds it
            holder = current.agent_owner
            if holder is None or not self._proven_dead(holder):
                return None
            self.registered = self._register(
                AgentClaim(owner, now + lease, replacing=holder, wake_address=self._wake_address())
            )
        return Lease(name, 0, owner, 0, claim.lease_until)

    def renew(self, lease: Lease, *, duration: timedelta) -> Lease:
        self._check(lease.name)
        now = self._clock.now()
        claim = AgentClaim(lease.owner, now + duration, wake_address=self._wake_address())
        try:
            self._store.record_heartbeat(
                self._template.service,
                self._template.id,
                now,
                expiry_for(now, self._ttl),
                claim=claim,
            )
        except NotFoundError as gone:
            # Removed as dead while this agent could not write: it must register again.
            raise LockLostError(f"{gone.message}; registering it again") from gone
        return Lease(lease.name, lease.slot, lease.owner, lease.token, claim.lease_until)

    def release(self, lease: Lease) -> bool:
        self._check(lease.name)
        return self._store.release_instance(self._template.service, self._template.id, lease.owner)

    def holders(self, name: str) -> list[Lease]:
        self._check(name)
        try:
            current = self._store.get_instance(self._template.service, self._template.id)
        except NotFoundError:
            return []
        until = current.agent_lease_until
        if current.agent_owner is None or until is None or until <= self._clock.now():
            return []
        return [Lease(name, 0, current.agent_owner, 0, until)]

    def _register(self, claim: AgentClaim) -> Instance:
        now = self._clock.now()
        fresh = Instance(
            self._template.id,
            self._template.service,
            self._template.agent_version,
            registered_at=now,
            heartbeat_at=now,
        )
        return self._store.register_instance(
            fresh, expires_at=expiry_for(now, self._ttl), claim=claim
        )

    def _check(self, name: str) -> None:
        if name != lock_name(self._template.id):
            raise ValueError(f"{name!r} is not this instance's hold")
