"""The ports: what the engine needs from the outside world, as small protocols.

Each port has a real adapter in `adapters/` (DynamoDB, KMS, ELB, SQS, systemd) and an
in-memory one that passes the same contract suite (tests/contract/). Adapters
translate their library's errors into `engine.errors` at the edge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.errors import FlotillaError
from flotilla.engine.records import (
    AgentClaim,
    CurrentRevision,
    Instance,
    Lease,
    Revision,
    RevisionBinding,
    SealedEnvironment,
    Service,
)
from flotilla.engine.users import User


class StateStore(Protocol):
    """Services, revisions, instances and deploy checkpoints.

    Every write that several parties can race is conditional: a losing writer gets a
    `ConflictError` carrying the current record, never a silent overwrite.
    """

    # Services: `update_service` writes only if the stored version equals `service.version`.
    def create_service(self, service: Service) -> Service: ...
    def get_service(self, name: str) -> Service: ...
    def list_services(self, *, segment: int = 0, segments: int = 1) -> list[Service]: ...
    def update_service(self, service: Service) -> Service: ...
    def delete_service(self, name: str, *, expected_version: int) -> None: ...

    # Revisions are immutable: putting the same id twice is a no-op.
    def put_revision(self, revision: Revision) -> Revision: ...
    def get_revision(self, service: str, revision_id: str) -> Revision: ...
    def list_revisions(self, service: str) -> list[Revision]: ...

    # Instances: each writer updates only its own fields (see `Instance`).
    # Instances: with a `claim`, registering also takes the instance for an agent process
    # (`ConflictError` carrying the instance while another live agent holds it), and a
    # heartbeat renews that claim (`LockLostError` once another agent took it over).
    def register_instance(
        self, instance: Instance, *, expires_at: datetime, claim: AgentClaim | None = None
    ) -> Instance: ...
    # Instances are addressed by their service and id (their stored key carries both), but
    # EC2's word that a machine went names only the machine, so `mark_instance_left` finds
    # its instance(s) by id.
    def record_heartbeat(
        self,
        service: str,
        instance_id: str,
        at: datetime,
        expires_at: datetime,
        *,
        claim: AgentClaim | None = None,
    ) -> None: ...
    def mark_instance_left(self, instance_id: str, at: datetime) -> Instance:
        """Record that EC2 says the machine is going; `NotFoundError` if it is unknown."""
        ...

    def release_instance(self, service: str, instance_id: str, owner: str) -> bool:
        """Give up `owner`'s claim on the instance; False (no change) if it is not held so."""
        ...

    def set_assignment(
        self, service: str, instance_id: str, revision_id: str | None, *, expected_version: int
    ) -> Instance: ...
    def set_current_revision(
        self, service: str, instance_id: str, revision_id: str | None
    ) -> None: ...
    # `consistent` False may read a moment-old instance, for half the price (an agent's
    # periodic look at its assignment; a wake-up asks for the latest).
    def get_instance(
        self, service: str, instance_id: str, *, consistent: bool = True
    ) -> Instance: ...
    def list_instances(self, service: str) -> list[Instance]: ...
    def delete_instance(self, service: str, instance_id: str) -> None: ...

    # Deploys: `update_deploy` writes only if the stored version equals `checkpoint.version`;
    # with `current`, it records the instance's current revision in the same atomic write
    # (both or neither; `NotFoundError` if the instance is gone, and nothing is written);
    # with `release`, it frees that lease's slot in the same write if the lease still
    # holds it (a slot held no more does not stop the checkpoint).
    def create_deploy(self, checkpoint: DeployCheckpoint) -> DeployCheckpoint: ...
    def get_deploy(self, deploy_id: str) -> DeployCheckpoint: ...
    def update_deploy(
        self,
        checkpoint: DeployCheckpoint,
        *,
        current: CurrentRevision | None = None,
        release: Lease | None = None,
    ) -> DeployCheckpoint: ...
    def list_deploys(
        self, service: str, *, since: datetime | None = None, brief: bool = False
    ) -> list[DeployCheckpoint]:
        """The service's deploys created since `since`, oldest first. `brief`: without
        each step's record, the unit plan and the pinned images (history empty, units
        and images None), for a reader that needs only where each deploy stands."""
        ...

    def list_instance_deploys(self, service: str, instance_id: str) -> list[DeployCheckpoint]: ...


class LockService(Protocol):
    """Named leases with N slots each (a counting semaphore) and fencing tokens."""

    def acquire(self, name: str, owner: str, *, slots: int, lease: timedelta) -> Lease | None:
        """Take a free (or expired) slot, or return None if all `slots` are held."""
        ...

    def renew(self, lease: Lease, *, duration: timedelta) -> Lease:
        """Extend a lease its holder still has; `LockLostError` if it lapsed or was taken."""
        ...

    def release(self, lease: Lease) -> bool:
        """Free the slot if `lease` still holds it; False (and no change) otherwise."""
        ...

    def holders(self, name: str) -> list[Lease]:
        """The unexpired leases of `name`."""
        ...


class SecretBox(Protocol):
    """Envelope encryption of a revision's environments, bound to its service and, given a
    `binding`, to its revision (label and unit files)."""

    def seal(
        self,
        service: str,
        environments: Mapping[str, Mapping[str, str]],
        binding: RevisionBinding | None = None,
    ) -> SealedEnvironment:
        """Encrypt each unit's variables under one fresh data key (scheme 2 with a binding,
        the older scheme 1 without)."""
        ...

    def open(
        self,
        service: str,
        sealed: SealedEnvironment,
        binding: RevisionBinding | None = None,
    ) -> dict[str, dict[str, str]]:
        """Decrypt; `SecretError` if the key, the service, the binding (scheme 2) or the
        ciphertext does not match."""
        ...


class TargetState(StrEnum):
    """Where a load balancer has an instance, in words common to classic ELB and ELBv2."""

    UNUSED = "unused"  # not registered (deregistration finished)
    DRAINING = "draining"
    INITIAL = "initial"  # registered, health checks not yet passed
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class LoadBalancer(Protocol):
    """Move traffic away from an instance and back."""

    def deregister(self, instance_id: str) -> None: ...
    def register(self, instance_id: str) -> None: ...
    def state(self, instance_id: str) -> TargetState: ...


@dataclass(frozen=True)
class ProbeTarget:
    """What the agent checks on its own instance (engine.deploy.probing.probe_target)."""

    kind: str  # "tcp", "http", "https" (on 127.0.0.1:port) or "command"
    port: int | None = None
    path: str | None = None  # http(s): the request's path
    command: str | None = None  # command: run by /bin/sh; never shown (it may hold a token)

    def describe(self) -> str:
        """How a person reads it in history and spans; a command is named, never shown."""
        if self.kind == "command":
            return "the health command"
        if self.kind == "tcp":
            return f"tcp://127.0.0.1:{self.port}"
        return f"{self.kind}://127.0.0.1:{self.port}{self.path or '/'}"


@dataclass(frozen=True)
class ProbeResult:
    """One probe's answer. `detail` says what was seen in a few words ("HTTP 503",
    "connection refused", "exit status 1", "no answer within 5 s"): never a body or a
    command's output, which may hold secrets."""

    passed: bool
    detail: str


class HealthProbe(Protocol):
    """Probes a service's own health check from its instance, once per call.

    An HTTP(S) probe passes on a 2xx or 3xx answer (redirects are not followed; TLS
    certificates are not checked, as a load balancer does not), a TCP probe when a
    connection is accepted, a command when it exits 0 within the timeout (it is killed
    otherwise, with whatever it started). A failure is a result, never an exception.
    tests/contract/test_health_probe.py checks this for every implementation.
    """

    def check(self, target: ProbeTarget, *, timeout: timedelta) -> ProbeResult: ...


@dataclass(frozen=True)
class UnitStatus:
    """What systemd (or the process runtime) says about one unit."""

    name: str  # the installed name, e.g. "flotilla-web-3f2a9c1b7d4e.service"
    active_state: str  # active, activating, deactivating, inactive, failed
    sub_state: str
    result: str  # systemd's Result: success, exit-code, signal, timeout, ...
    exit_status: int | None = None
    # The running main process (systemd's MainPID), None when none runs: the same number
    # before and after a deploy shows the unit was left untouched.
    main_pid: int | None = None


@dataclass(frozen=True)
class HookCommand:
    """One run of a revision's lifecycle hook (engine/hooks.py names and builds it)."""

    unit: str  # the transient unit's name: `engine.hooks.hook_unit_name`, never an owned one
    script: str  # run with its `#!` interpreter, else /bin/sh
    timeout_seconds: int  # then the hook is stopped and its result is "timeout"
    environment: Mapping[str, str] = field(repr=False)  # secret: a root-only file, never argv


@dataclass(frozen=True)
class HookResult:
    """How a hook's run ended, in systemd's words. Its output is not here: it went to the
    journal (or the runtime's log), where a secret it prints stays on the instance."""

    unit: str
    result: str  # success, exit-code, signal, timeout, core-dump, ...
    exit_status: int | None  # None when the process did not exit by itself (a signal)
    duration_seconds: float

    @property
    def succeeded(self) -> bool:
        return self.result == "success" and self.exit_status == 0


class UnitRuntime(Protocol):
    """Installs, starts, stops and removes the units Flotilla owns, and only those.

    Every method refuses a name Flotilla does not own (`ValidationError`) before touching
    anything, and every method is idempotent.

    The settling rule, what `start` guarantees when it returns: every named unit has
    left its transitional state (its start job is done, it is no longer activating) and
    is running well, as `engine.activation.judge` reads its status: active, or a oneshot
    that exited 0; and no unit failed within the runtime's own short settle period after
    starting (a service whose process is forked is "started" even if it exits a moment
    later). Otherwise `start` raises `UnitFailedError` naming the unit, systemd's result
    and the exit status, with the message built by `engine.activation.unit_failure`.
    Runtimes wait with `engine.activation.settle`, the one settle loop, which the deploy
    also uses to watch the units through the service's longer settle period.
    tests/contract/test_unit_runtime.py checks this for every implementation.
    """

    def owned_units(self) -> list[str]:
        """Installed names of every unit Flotilla owns on this machine."""
        ...

    def install(
        self,
        revision_id: str,
        units: Mapping[str, str],
        environments: Mapping[str, Mapping[str, str]],
        names: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Write unit and environment files (idempotent), reload; return installed names.
        `names` keeps some units under the owned name they already run under
        (`engine.units.plan_installation`); a file that did not change is not rewritten."""
        ...

    def start(self, names: Sequence[str]) -> None:
        """Start, and return only once the units settled (the rule above)."""
        ...

    def status(self, names: Sequence[str]) -> list[UnitStatus]: ...

    def stop(self, names: Sequence[str]) -> None:
        """Stop (idempotent: stopping a stopped or missing unit is fine)."""
        ...

    def remove(self, names: Sequence[str]) -> None:
        """Delete unit and environment files of owned units, reload (idempotent)."""
        ...

    def run_hook(self, command: HookCommand, *, between: Callable[[], None]) -> HookResult:
        """Run a lifecycle hook as a transient unit (systemd: StartTransientUnit) with its
        environment in a root-only file, and return once it ended: by itself, or stopped
        by the runtime at its timeout (result "timeout"). A run of the same unit left by a
        crashed agent is stopped first, so running a hook again starts it afresh. Calls
        `between` while it waits (the deploy keeps its leases). A hook that fails is a
        result, not an error; errors are the runtime's own (`TransientError`, ...)."""
        ...


class ContainerImages(Protocol):
    """Pulls container images on this machine, for container units (docs/containers.md).

    `pull` fetches the image from its registry even when a copy of the tag is already
    here (the tag may have moved), and returns the digest reference of what it pulled,
    `name@sha256:…`, which names that image for good: a unit pinned to it runs the same
    image whatever the tag points to later (engine/container_images.py). An image that
    cannot be pulled raises `ImagePullError` with the engine's reason.
    tests/contract/test_container_images.py checks this for every implementation.
    """

    def pull(self, image: str) -> str: ...


@dataclass(frozen=True)
class Event:
    """A wake-up for the scheduler or an agent, carried by SQS."""

    kind: str  # service_changed, instance_joined, instance_left, deploy_finished, deploy_failed
    service: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    receipt: str | None = None  # set on received events, used to acknowledge them


# The event a machine's own leaving becomes (EC2's state-change notification, through
# EventBridge): it names the instance, not its service (`service` is "").
INSTANCE_LEFT = "instance_left"
# EC2 reported a state that is not leaving (pending, running): nothing to do.
INSTANCE_STATE = "instance_state"


class EventQueue(Protocol):
    """At-least-once delivery of events."""

    def send(self, event: Event) -> None: ...
    def receive(self, *, wait: timedelta, max_events: int = 10) -> list[Event]:
        """Up to `max_events` events, waiting up to `wait` for the first, in whole seconds
        rounded down (SQS long-polls whole seconds): a wait under a second looks once."""
        ...

    def ack(self, *events: Event) -> None:
        """Acknowledge received events: they never come back. Several at once cost SQS
        one call per ten. Acknowledging one twice is harmless."""
        ...


class WakeUps(Protocol):
    """Wake-up channels, one per instance: the scheduler rings an instance's channel when
    its assignment changes, and its agent waits on the channel instead of polling the store.

    Best effort by design: a lost wake-up costs the time until the agent's next (rare)
    poll, a doubled one a read that finds nothing new.
    """

    def open(self, instance_id: str) -> str:
        """Create (or find) the instance's channel; its address."""
        ...

    def wait(self, address: str, seconds: float) -> bool:
        """Wait at most `seconds` for a ring; True if one came (it is consumed then).
        `NotFoundError` if the channel is gone (its owner opens it again)."""
        ...

    def ring(self, address: str) -> None:
        """Wake whoever waits on `address`; `NotFoundError` if the channel is gone."""
        ...

    def ring_all(self, addresses: Sequence[str]) -> dict[str, FlotillaError]:
        """Ring each of `addresses`, at once where the channels allow it (a slot's refill
        waits for the last); what failed, by address (`NotFoundError`: gone)."""
        ...

    def close(self, address: str) -> None:
        """Delete the channel (its instance left); closing a closed one is harmless."""
        ...


class UserStore(Protocol):
    """Who may log in by SSH where (`engine.users`).

    `put_user` with `version` 0 creates the user (`AlreadyExistsError` if it exists);
    otherwise it writes only if the stored version equals `user.version` (`ConflictError`
    carrying the current user if not, `NotFoundError` if it is gone). It returns the
    stored user, its version bumped.
    """

    def put_user(self, user: User) -> User: ...
    def get_user(self, name: str) -> User: ...
    def delete_user(self, name: str, *, expected_version: int) -> None: ...
    def list_users(self) -> list[User]: ...


# --- rollout gates and events out (scheduler/gates.py, scheduler/announce.py) ----------


class AlarmState(StrEnum):
    """A CloudWatch alarm's state, in CloudWatch's own words."""

    OK = "OK"
    ALARM = "ALARM"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


class Alarms(Protocol):
    """Alarms read by name (CloudWatch metric and composite alarms)."""

    def states(self, names: Sequence[str]) -> dict[str, AlarmState]:
        """The state of each named alarm that exists; a name that does not exist is left
        out (so the caller can say which). `TransientError` or `FlotillaError` when the
        alarms could not be read."""
        ...


@dataclass(frozen=True)
class WebhookAnswer:
    """How one webhook call went."""

    url: str
    passed: bool  # answered 2xx within the time-out
    status: int | None  # the HTTP status, None when there was no answer
    reason: str  # "answered 200", "answered 500", "did not answer within 5 s", ...


class Webhooks(Protocol):
    """HTTP webhooks a rollout calls before each step (a confirm gate, like Flagger's)."""

    def call(self, url: str, payload: Mapping[str, Any], *, timeout: timedelta) -> WebhookAnswer:
        """POST `payload` as JSON to `url`, following no redirect. What the endpoint does
        (a status, silence, a refused connection) is an answer, never an exception."""
        ...


@dataclass(frozen=True)
class Notice:
    """One event for other systems: a rollout's decision or a deploy's outcome. Its JSON
    form (`adapters.items.notices`) is documented in docs/events.md."""

    id: str  # the same for every delivery of one event: consumers drop repeats by it
    kind: str  # rollout_started, step_reached, rollout_failed, deploy_succeeded, ...
    service: str
    at: datetime
    reason: str
    weights: Mapping[str, int] = field(default_factory=dict)  # in force after the event
    labels: Mapping[str, str] = field(default_factory=dict)  # revision id -> label
    step: Mapping[str, int] | None = None  # {"index": 2, "of": 3}, 1-based
    deploy: Mapping[str, Any] | None = None  # id, instance, from/to revision, outcome, error


class EventTopic(Protocol):
    """Where rollout events go out (an SNS topic); subscribers are the operator's."""

    def publish(self, notice: Notice) -> None:
        """Publish one event; `TransientError` or `FlotillaError` when it could not."""
        ...
