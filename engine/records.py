"""The domain records: what Flotilla stores about services, revisions and instances.

Records are frozen dataclasses. Stored items are made from them in `adapters.items`;
every item carries a schema number so a newer agent can read an older item, or refuse
a newer one clearly. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class LoadBalancerKind(StrEnum):
    CLASSIC = "classic"  # a classic ELB, named
    TARGET_GROUP = "target_group"  # an ELBv2 target group, by ARN


@dataclass(frozen=True)
class LoadBalancerRef:
    """Which load balancer moves traffic away from an instance while it upgrades."""

    kind: LoadBalancerKind
    name: str  # classic ELB name, or target group ARN


class HealthCheckProtocol(StrEnum):
    TCP = "TCP"  # a connection is accepted
    HTTP = "HTTP"  # GET PATH answers 2xx or 3xx (a target group: 200 unless told otherwise)
    HTTPS = "HTTPS"  # the same over TLS (the certificate is not checked, as by ELB)


@dataclass(frozen=True)
class HealthCheck:
    """A service's health check, as `--health-check PROTO:PORT/path` gives it.

    With a load balancer it is the load balancer's check (cfn_templates/service.yaml);
    without one the agent probes `127.0.0.1:PORT` itself before `healthy` succeeds
    (engine/health_checks.py). The defaults are the template's, which were fixed before.
    """

    protocol: HealthCheckProtocol
    port: int
    path: str | None = None  # HTTP(S) only; None is "/"
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2
    interval_seconds: int = 10
    timeout_seconds: int = 5

    @property
    def text(self) -> str:
        """`TCP:80`, `HTTP:8080/health`: the option's own spelling."""
        path = "" if self.protocol is HealthCheckProtocol.TCP else self.path or "/"
        return f"{self.protocol.value}:{self.port}{path}"


DEFAULT_HEALTH_PERIOD = 10  # seconds an agent-side probe must pass without a break


class FailureAction(StrEnum):
    """What the scheduler does when a rollout fails (budget spent, an alarm, the deadline)."""

    REVERT = "revert"  # restore the last good weights, fast: no steps, no bake, no gates
    HOLD = "hold"  # pause the service, keep what runs, say why; `rollout resume` goes on


DEFAULT_PROGRESS_DEADLINE = 600  # seconds, as Flagger's and Nomad's defaults


@dataclass(frozen=True)
class RolloutStep:
    """One step of a step plan (`scheduler.steps` does the arithmetic).

    `amount` is how many of the rollout's moves may have begun by the end of the step: a
    count of instances ("1") or a share of the moves ("25%"); None makes the step a manual
    gate (`pause`), passed only by `flotilla rollout promote`. Once the step's deploys have
    all ended, it bakes for `bake_seconds` before the next step may begin.
    """

    amount: str | None
    bake_seconds: int = 0

    @property
    def is_pause(self) -> bool:
        return self.amount is None


@dataclass(frozen=True)
class RolloutPolicy:
    """How fast a rollout may go, in which steps, behind which gates, and when it fails."""

    max_in_flight: str = "1"  # a count ("2") or a share of the live instances ("25%")
    max_failures: int = 1  # failed deploys of a revision that spend the failure budget
    failure_action: FailureAction = FailureAction.REVERT
    steps: tuple[RolloutStep, ...] = ()  # none: one step of 100 %, no bake
    alarms: tuple[str, ...] = ()  # CloudWatch alarm names: in ALARM -> the failure action
    webhooks: tuple[str, ...] = ()  # http(s) URLs called before each step; 2xx opens it
    progress_deadline_seconds: int = DEFAULT_PROGRESS_DEADLINE  # 0: no deadline
    revert_max_in_flight: str | None = None  # a revert's own pace; None: max_in_flight

    def slots(self, live_instances: int, *, reverting: bool = False) -> int:
        """How many instances may deploy at once; never fewer than one."""
        text = self.max_in_flight.strip()
        if reverting and self.revert_max_in_flight is not None:
            text = self.revert_max_in_flight.strip()
        if text.endswith("%"):
            share = int(text[:-1])
            return max(1, live_instances * share // 100)
        return max(1, int(text))


class RolloutStatus(StrEnum):
    ROLLING = "rolling"  # instances are being moved towards the rollout's weights
    COMPLETE = "complete"  # every live instance reached them (or failed on them)
    STOPPED = "stopped"  # it failed and could not revert: nothing more moves to that revision
    HELD = "held"  # it failed with the failure action `hold`: the service is paused


@dataclass(frozen=True)
class GateResult:
    """What the webhooks of a step answered when the scheduler last called them."""

    step: int  # the step they were called before
    passed: bool  # every one answered 2xx (or a promotion opened the gate)
    at: datetime
    reason: str | None = None  # why not, e.g. "https://ci/confirm answered 500"


@dataclass(frozen=True)
class RolloutState:
    """The scheduler's record of a service's current rollout. Only the scheduler writes it.

    A rollout begins whenever the scheduler sees weights different from `weights`.
    `previous_weights` are the weights of the last rollout that completed without a
    single failed deploy: what an automatic revert restores (None until one has).
    """

    weights: dict[str, int] = field(default_factory=dict)  # the weights being rolled out
    status: RolloutStatus = RolloutStatus.COMPLETE
    started_at: datetime | None = None
    # Deploys created since then may still be unfinished; None once the rollout completed.
    watch_since: datetime | None = None
    failures: dict[str, int] = field(default_factory=dict)  # revision -> failed deploys
    reason: str | None = None  # why the rollout stopped
    previous_weights: dict[str, int] | None = None
    # The fencing token (and its lock's name) of the scheduler that last wrote this state:
    # a scheduler holding an older token of the same lock has lost its lease and must stop.
    fence_lock: str | None = None
    fence: int = 0
    # The deploy lock's slots for the live instances, as the scheduler last counted them
    # (`RolloutPolicy.slots`): deploys take a slot without counting the service's instances
    # themselves. 0 until a scheduler has planned the service.
    slots: int = 0
    # Step plans and gates (`scheduler.steps`), stored so that a new leader carries on where
    # the last one stopped: the step under way (an index into the policy's steps), since
    # when it may move instances, since when it bakes (None until its deploys all ended),
    # its webhooks' last answer, and the step whose waits a promotion skipped.
    step: int = 0
    step_since: datetime | None = None
    baking_since: datetime | None = None
    gate: GateResult | None = None
    skip_step: int | None = None
    promoted: int = 0  # the number of the last `Service.promotion` applied
    fast: bool = False  # a revert: no steps, no bake, no gates, `revert_max_in_flight`
    resumed_at: datetime | None = None  # a hold was resumed: failures count from then
    # Events out (`scheduler.announce`): history entries and deploy ends up to this time
    # were published (at least once) by the scheduler that last wrote this state.
    announced_until: datetime | None = None


@dataclass(frozen=True)
class CurrentRevision:
    """The revision an instance runs now (None: nothing), as a deploy records it."""

    instance_id: str
    revision: str | None


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a service's history: a rollout started, completed, stopped or reverted."""

    at: datetime
    # rollout_started, step_reached, rollout_complete, rollout_stopped, held, reverted (the
    # scheduler's); paused, resumed, reverted, undone, promoted (an operator's)
    kind: str
    reason: str
    weights: dict[str, int]  # the weights in force after this entry


HISTORY_LIMIT = 100  # entries kept on the service item; older ones are dropped


@dataclass(frozen=True)
class Promotion:
    """An operator's `flotilla rollout promote`: skip the current wait of the rollout (its
    gate, bake or pause), or with `full` every wait to its end. Each promotion gets the
    next `number`; the scheduler applies each number once (`RolloutState.promoted`)."""

    number: int
    full: bool
    at: datetime
    by: str


class WaveStatus(StrEnum):
    """Where a rollout in waves (`flotilla weights ... --waves A,B`) stands."""

    ROLLING = "rolling"  # the current wave's region rolls out, or bakes before the next
    HELD = "held"  # a region could not be reached or read: the waves wait (`reason` says)
    COMPLETE = "complete"  # every wave's region completed its rollout
    STOPPED = "stopped"  # a region's rollout failed, or an operator stopped the waves


@dataclass(frozen=True)
class Wave:
    """One region's part of a rollout in waves."""

    region: str
    weights: dict[str, int]  # revision id (in that region) -> weight, resolved when staged
    # The region's weights as read just before this wave set its own (recorded first, so
    # a command that dies between the two still knows what to restore); None until then.
    before: dict[str, int] | None = None
    applied_at: datetime | None = None  # its weights were stored in the region
    completed_at: datetime | None = None  # its rollout completed: the bake counts from here
    undone: bool = False  # its weights were set back to `before` when the waves stopped

    @property
    def applied(self) -> bool:
        return self.applied_at is not None


@dataclass(frozen=True)
class WavePlan:
    """A rollout that goes region by region; stored on the service's record in its home
    region (the first it names), so a command that dies mid-wave loses nothing."""

    number: int  # each new plan of a service gets the next; a driver follows its own
    waves: tuple[Wave, ...]
    bake_seconds: int  # after a region completed, before the next one starts
    failure_action: FailureAction  # for the regions done when a later one fails
    status: WaveStatus
    started_at: datetime
    by: str
    reason: str | None = None
    stop_all: bool = False  # the weights run nothing, as `weights --stop-all` allowed

    @property
    def current(self) -> int | None:
        """The index of the wave under way; None once every one completed."""
        for index, wave in enumerate(self.waves):
            if wave.completed_at is None:
                return index
        return None

    @property
    def finished(self) -> bool:
        return self.status in (WaveStatus.COMPLETE, WaveStatus.STOPPED)


@dataclass(frozen=True)
class Service:
    """A named group of instances that run the same units."""

    name: str
    load_balancer: LoadBalancerRef | None = None
    drain_timeout_seconds: int = 300
    health_timeout_seconds: int = 300
    settle_seconds: int = 5  # how long units must stay active before a deploy counts as healthy
    # None: the template's fixed check (classic ELB TCP on the instance port, target group
    # HTTP on /); without a load balancer, no probe.
    health_check: HealthCheck | None = None
    # Without a load balancer only: a command the agent runs as its probe (exit 0 passes).
    health_command: str | None = None
    # How long an agent-side probe (health check or command) must pass without a break.
    health_period_seconds: int = DEFAULT_HEALTH_PERIOD
    rollout: RolloutPolicy = field(default_factory=RolloutPolicy)
    weights: dict[str, int] = field(default_factory=dict)  # revision id -> weight
    paused: bool = False
    version: int = 0  # bumped by every stored change; writes are conditional on it
    created_at: datetime | None = None
    updated_at: datetime | None = None
    rollout_state: RolloutState = field(default_factory=RolloutState)
    history: tuple[HistoryEntry, ...] = ()  # the last HISTORY_LIMIT entries, oldest first
    promotion: Promotion | None = None  # the operator's last `rollout promote`
    # When `service delete` asked for the service to go: its instances are assigned no
    # revision, and the scheduler removes the record once none runs anything
    # (docs/scheduler.md, "Deleting a service"). A service being deleted cannot be changed.
    deleting_since: datetime | None = None
    # The regions the service exists in, its home region first; () for a service of one
    # region (where it is stored). Every region's record names them all.
    regions: tuple[str, ...] = ()
    # Its rollout in waves, on the home region's record only (docs/regions.md).
    waves: WavePlan | None = None

    @property
    def deleting(self) -> bool:
        return self.deleting_since is not None


@dataclass(frozen=True)
class SealedBlob:
    """One unit's environment, encrypted with the revision's data key (AES-256-GCM)."""

    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class SealedEnvironment:
    """A revision's environments, envelope-encrypted under one data key.

    `variable_names` are stored in the clear so that `revision show` can list them;
    values exist only inside `blobs`.
    """

    key_id: str  # the KMS key (or local master key) that wrapped the data key
    encrypted_data_key: bytes
    blobs: dict[str, SealedBlob]  # unit name -> its sealed variables
    variable_names: dict[str, tuple[str, ...]]  # unit name -> its variable names, sorted
    # 1: bound to the service and unit only (before issue 14); 2: also bound to the
    # revision it belongs to (`RevisionBinding`), see adapters/secrets.py.
    scheme: int = 1


# The sealing scheme this version writes.
BOUND_SCHEME = 2


@dataclass(frozen=True)
class RevisionBinding:
    """What a sealed environment is bound to besides its service: its revision's label and
    the digest of its unit files (the id the revision would have without an environment).
    The id itself hashes the ciphertexts, so it cannot be inside them (engine/revisions.py)."""

    label: str
    units_digest: str


# The lifecycle hooks a revision may have (docs/hooks.md), in the order a deploy runs them:
# `before-stop` before the old units stop, `after-start` once the new ones settled,
# `validate` before the deploy may count as healthy (its failure rolls the deploy back).
HOOK_NAMES = ("before-stop", "after-start", "validate")
DEFAULT_HOOK_TIMEOUT_SECONDS = 300
MAX_HOOK_TIMEOUT_SECONDS = 3600


@dataclass(frozen=True)
class Hook:
    """One lifecycle hook of a revision: a script (run with its `#!` interpreter, else
    /bin/sh) and how long it may run before it is stopped and counts as failed."""

    script: str
    timeout_seconds: int = DEFAULT_HOOK_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Revision:
    """An immutable set of unit files plus their sealed environment and lifecycle hooks."""

    service: str
    id: str  # sha256 of the stored content (units, hooks and ciphertexts, never plaintext)
    label: str
    units: dict[str, str]  # unit name ("web.service") -> unit file text
    environment: SealedEnvironment | None
    created_at: datetime
    hooks: dict[str, Hook] = field(default_factory=dict)  # hook name (HOOK_NAMES) -> hook


@dataclass(frozen=True)
class Instance:
    """One machine running the agent, born into one service.

    Each field has one writer, and writers update only their own fields: the agent
    owns the heartbeat and `current_revision`, the scheduler owns the assignment
    (conditional on `assignment_version`). So a heartbeat can never undo an assignment.
    """

    id: str
    service: str
    agent_version: str
    registered_at: datetime
    heartbeat_at: datetime
    assigned_revision: str | None = None
    assignment_version: int = 0
    current_revision: str | None = None
    # The agent process that holds the instance (its identity, engine/deploy/agent_lease)
    # and until when; the agent's heartbeat renews it (one write for both).
    agent_owner: str | None = None
    agent_lease_until: datetime | None = None
    # Where the scheduler rings the agent when the assignment changes (its wake-up queue);
    # None: the agent only polls.
    wake_address: str | None = None
    # When EC2 said the machine was going (stopping or terminating): dead from then on,
    # whatever its last heartbeat, until an agent takes the instance again.
    left_at: datetime | None = None


@dataclass(frozen=True)
class AgentClaim:
    """An agent process taking (or keeping) its instance until `lease_until`; `replacing`
    names a predecessor proven dead, whose claim it may take over before it runs out."""

    owner: str
    lease_until: datetime
    replacing: str | None = None
    wake_address: str | None = None  # recorded on the instance with the claim, if known


# Stored keys carry the service first, so that IAM's `dynamodb:LeadingKeys` can confine a
# service's workers to their own service's instances and deploys (`<service>/i-*`, see
# cfn_templates/service.yaml). Service names hold no "/" (engine.validation).
KEY_SEPARATOR = "/"


def instance_key(service: str, instance_id: str) -> str:
    """The stored key of an instance of a service."""
    return f"{service}{KEY_SEPARATOR}{instance_id}"


def deploy_id_for(instance: Instance) -> str:
    """One deploy per assignment: a restarted agent finds it again instead of starting anew.
    Its id begins with the instance's key, hence with the service."""
    return f"{instance_key(instance.service, instance.id)}.{instance.assignment_version}"


def service_of_key(key: str) -> str | None:
    """The service a stored key names; None for a key of the shape stored before keys
    carried the service (a bare instance id, or `<instance id>.<n>` for a deploy)."""
    service, separator, _ = key.partition(KEY_SEPARATOR)
    return service if separator else None


@dataclass(frozen=True)
class Lease:
    """One slot of a named lock, held by `owner` until `expires_at` unless renewed."""

    name: str
    slot: int
    owner: str
    token: int  # fencing token: larger than that of every earlier holder of this name
    expires_at: datetime
