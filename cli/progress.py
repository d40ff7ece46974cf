"""A service's rollout as `flotilla rollout status|watch` shows it: gathered once, drawn twice.

`read_progress` reads what the scheduler reads (the service, its instances, the deploys
that matter) and classifies every live instance the scheduler's way (`scheduler.rollout`),
so status never disagrees with what the scheduler will do; what the rollout waits for is
the planner's own answer on the same inputs (`cli.rollout_waits`). `progress_json` is the shape
scripts get; `print_progress` draws it for a person: a header, one bar per revision
(instances running it against the count its weight asks for) and a table of instances.
Revisions are shown by label, or by a 12-character id prefix when no label is known.

Liveness: every instance shows when it was last heard from (its heartbeat, or its deploy's
last checkpoint when that is later) and its agent's version. One not heard from for two
of its heartbeats is *silent* (its agent may be dead: a SIGKILLed agent looks exactly like
this) and is shown so, with how long, until the instance TTL passes and it stops counting
(never later than halfway to the TTL). The threshold is not a number of its own: an
agent's heartbeat is the renewal of its hold on the instance, once a third of the hold
has passed (`engine.leases`), and the instance records the hold it took, so each
instance's threshold follows its own agent's settings; an instance that records none gets
the default heartbeat and TTL of `engine.liveness`, the one place they are decided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import click

from flotilla.cli.output import print_fields, print_table
from flotilla.cli.rollout_waits import (
    instance_waits,
    planned_waits,
    read_inputs,
    wait_lines,
    waits_json,
)
from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.liveness import DEFAULT_HEARTBEAT, DEFAULT_INSTANCE_TTL
from flotilla.engine.operations.names import label_of, weights_text
from flotilla.engine.ports import StateStore
from flotilla.engine.records import Instance, RolloutStatus, Service, deploy_id_for
from flotilla.machines.deploy import FAILURE_STATES, HAPPY_PATH
from flotilla.scheduler.apportion import hamilton_counts
from flotilla.scheduler.gates import Readings
from flotilla.scheduler.rollout import (
    Phase,
    phase_of,
    running_deploys,
)
from flotilla.scheduler.waits import Wait

BAR_WIDTH = 30


RENEWED_AT = 3  # a hold is renewed once a third of it has passed (engine.leases)


def heartbeat_of(instance: Instance) -> timedelta:
    """How often `instance`'s agent heartbeats: a third of the hold it last took, as the
    instance records it, or the default when it records none."""
    until = instance.agent_lease_until
    if until is not None and until > instance.heartbeat_at:
        return (until - instance.heartbeat_at) / RENEWED_AT
    return DEFAULT_HEARTBEAT


def silence_threshold(heartbeat: timedelta, ttl: timedelta) -> timedelta:
    """An instance is silent once two heartbeats are missed, and at the latest halfway
    to the TTL (with heartbeats almost as rare as the TTL, two would never come)."""
    return min(2 * heartbeat, ttl / 2)


# The scheduler's word `in_flight` reads as "deploying" to a person watching a rollout.
PHASE_WORDS = {Phase.SETTLED: "settled", Phase.IN_FLIGHT: "deploying", Phase.FAILED: "failed"}


def phase_word(item: InstanceProgress) -> str:
    """The phase for a person; an instance in flight to no revision is `unassigning`."""
    if item.phase is Phase.IN_FLIGHT and item.instance.assigned_revision is None:
        return "unassigning"
    return PHASE_WORDS[item.phase]


@dataclass(frozen=True)
class InstanceProgress:
    instance: Instance
    phase: Phase
    deploy: DeployCheckpoint | None  # the deploy that decides its phase, if there is one

    @property
    def last_seen(self) -> datetime:
        """The latest sign of life: its heartbeat, or its deploy's last checkpoint."""
        seen = self.instance.heartbeat_at
        if self.deploy is not None and self.deploy.updated_at > seen:
            return self.deploy.updated_at
        return seen


@dataclass(frozen=True)
class Progress:
    """One reading of a service's rollout."""

    service: Service
    labels: dict[str, str]  # revision id -> label
    instances: tuple[InstanceProgress, ...]  # live ones, by id
    dead: int  # instances whose heartbeat is too old to count
    read_at: datetime
    ttl: timedelta  # after this long without a heartbeat an instance stops counting
    planned: tuple[Wait, ...] = ()  # what the scheduler's planner finds the rollout waits for

    @property
    def waiting_for(self) -> list[Wait]:
        return [*self.planned, *instance_waits(self)]

    def silent_after(self, item: InstanceProgress) -> timedelta:
        """After how long without a word `item` is shown as silent."""
        return silence_threshold(heartbeat_of(item.instance), self.ttl)

    def silent_for(self, item: InstanceProgress) -> timedelta | None:
        """How long `item` has not been heard from, if that makes it silent."""
        quiet = self.read_at - item.last_seen
        return quiet if quiet >= self.silent_after(item) else None

    @property
    def silent(self) -> int:
        return sum(1 for i in self.instances if self.silent_for(i) is not None)

    @property
    def in_sync(self) -> bool:
        """Whether the scheduler has begun rolling out the weights now stored."""
        return self.service.rollout_state.weights == self.service.weights

    @property
    def failed(self) -> int:
        return sum(1 for i in self.instances if i.phase is Phase.FAILED)

    def revision_counts(self) -> list[dict[str, Any]]:
        """Per revision: weight, instances its weight asks for, instances assigned and running."""
        weights = self.service.weights
        live = [i.instance for i in self.instances]
        targets = hamilton_counts(len(live), weights) if weights else {}
        shown = set(weights) | {i.current_revision for i in live if i.current_revision}
        rows = []
        for revision in sorted(shown, key=lambda r: (-weights.get(r, 0), label_of(self.labels, r))):
            rows.append(
                {
                    "id": revision,
                    "label": label_of(self.labels, revision),
                    "weight": weights.get(revision, 0),
                    "target": targets.get(revision, 0),
                    "assigned": sum(1 for i in live if i.assigned_revision == revision),
                    "running": sum(1 for i in live if i.current_revision == revision),
                }
            )
        return rows


def read_progress(
    store: StateStore,
    service: Service,
    now: datetime,
    *,
    ttl: timedelta = DEFAULT_INSTANCE_TTL,
    readings: Readings | None = None,
) -> Progress:
    """Read the instances and deploys of `service` the way a scheduler pass does;
    `readings` are its alarms as a pass reads them (`rollout_waits.gate_readings`)."""
    live, dead, deploys = read_inputs(store, service, now, ttl)
    running = running_deploys(deploys.values())
    unfinished = {d.instance_id: d for d in deploys.values() if not d.finished}
    instances = []
    for instance in sorted(live, key=lambda i: i.id):
        phase = phase_of(instance, deploys, running)
        own = deploys.get(deploy_id_for(instance))
        deploy = unfinished.get(instance.id) or (own if phase is not Phase.SETTLED else None)
        instances.append(InstanceProgress(instance, phase, deploy))
    labels = {r.id: r.label for r in store.list_revisions(service.name)}
    waits = planned_waits(service, live, dead, deploys, now, readings)
    return Progress(service, labels, tuple(instances), len(dead), now, ttl, waits)


def _revision(progress: Progress, revision: str | None) -> dict[str, str] | None:
    if revision is None:
        return None
    return {"id": revision, "label": label_of(progress.labels, revision) or revision}


def _weights(progress: Progress, weights: Mapping[str, int] | None) -> list[dict[str, Any]] | None:
    if weights is None:
        return None
    return [
        {"id": rev, "label": label_of(progress.labels, rev), "weight": w}
        for rev, w in sorted(weights.items())
    ]


def step_of(item: InstanceProgress) -> tuple[str | None, int | None]:
    """The deploy machine state and its step on the happy path (None off the path)."""
    if item.phase is Phase.SETTLED:
        return None, None
    if item.deploy is None:
        return "waiting_for_agent", 0
    state = item.deploy.state
    if state in FAILURE_STATES or item.phase is Phase.FAILED:
        return state, None
    return state, HAPPY_PATH.index(state) + 1 if state in HAPPY_PATH else None


def progress_json(progress: Progress) -> dict[str, Any]:
    service = progress.service
    state = service.rollout_state
    instances = []
    for item in progress.instances:
        deploy_state, step = step_of(item)
        deploy = item.deploy
        instances.append(
            {
                "id": item.instance.id,
                "assigned_revision": _revision(progress, item.instance.assigned_revision),
                "current_revision": _revision(progress, item.instance.current_revision),
                "phase": phase_word(item),
                "deploy_id": None if deploy is None else deploy.id,
                "deploy_state": deploy_state,
                "progress": None if step is None else {"step": step, "steps": len(HAPPY_PATH)},
                "error": deploy.error if deploy and item.phase is Phase.FAILED else None,
                "agent_version": item.instance.agent_version,
                "heartbeat_at": item.instance.heartbeat_at.isoformat(),
                "last_seen_at": item.last_seen.isoformat(),
                "silent_for_seconds": _seconds(progress.silent_for(item)),
                "silent_after_seconds": _seconds(progress.silent_after(item)),
            }
        )
    return {
        "service": service.name,
        "paused": service.paused,
        "deleting_since": service.deleting_since.isoformat() if service.deleting_since else None,
        "weights": _weights(progress, service.weights),
        "rollout": {
            "status": state.status.value,
            "in_sync": progress.in_sync,
            "weights": _weights(progress, state.weights),
            "started_at": state.started_at.isoformat() if state.started_at else None,
            "failures": [
                {"id": rev, "label": label_of(progress.labels, rev), "count": n}
                for rev, n in sorted(state.failures.items())
            ],
            "reason": state.reason,
            "previous_weights": _weights(progress, state.previous_weights),
        },
        "waiting_for": waits_json(progress.waiting_for),
        "revisions": progress.revision_counts(),
        "instances": instances,
        "silent_instances": progress.silent,
        "dead_instances": progress.dead,
        "instance_ttl_seconds": _seconds(progress.ttl),
        "read_at": progress.read_at.isoformat(),
    }


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else round(value.total_seconds(), 3)


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """`[#####-----]`: `done` of `total`; empty when nothing is asked for (weight 0)."""
    share = 0.0 if total <= 0 else min(done, total) / total
    filled = round(share * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _revision_line(count: Mapping[str, Any], width: int) -> str:
    running, target, weight = count["running"], count["target"], count["weight"]
    if weight == 0:
        text = f"{running} running (weight 0: {'leaving' if running else 'runs nowhere'})"
    else:
        text = f"{running}/{target} running (weight {weight})"
    return f"{count['label']:<{width}}  {bar(running, target)}  {text}"


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def _status_line(progress: Progress) -> str:
    """The status and since when it holds: a complete rollout since it completed, a
    stopped one since it stopped, a rolling one since it began."""
    service = progress.service
    state = service.rollout_state
    text = state.status.value
    ended_kind = {
        RolloutStatus.COMPLETE: "rollout_complete",
        RolloutStatus.STOPPED: "rollout_stopped",
        RolloutStatus.HELD: "held",
    }
    since = state.started_at
    if state.status in ended_kind:
        ended = [
            entry.at
            for entry in service.history
            if entry.kind == ended_kind[state.status]
            and (state.started_at is None or entry.at >= state.started_at)
        ]
        since = ended[-1] if ended else None
    if since is not None:
        text += f" (since {_time(since)})"
    if state.status is RolloutStatus.COMPLETE and state.started_at is not None:
        text += f"; began {_time(state.started_at)}"
    if not progress.in_sync:
        text += "; new weights are stored, the scheduler has not begun rolling them out"
    return text


def print_progress(progress: Progress) -> None:
    service = progress.service
    state = service.rollout_state
    labels = progress.labels
    paused = service.paused
    fields: list[tuple[str, Any]] = [
        ("service", service.name),
        ("rollout", _status_line(progress)),
        ("paused", "yes: nothing moves until `flotilla rollout resume`" if paused else "no"),
        ("weights", weights_text(service.weights, labels)),
    ]
    if service.deleting_since is not None:
        fields.insert(
            1,
            (
                "being deleted",
                f"since {_time(service.deleting_since)}: every instance is being unassigned; "
                "the record goes when none runs anything",
            ),
        )
    if not progress.in_sync:
        fields.append(("rolling out", weights_text(state.weights, labels)))
    if state.failures:
        fields.append(("failures", weights_text(state.failures, labels)))
    if state.reason:
        fields.append(("stopped because", state.reason))
    if state.previous_weights is not None:
        fields.append(("last good", weights_text(state.previous_weights, labels)))
    ttl = _duration(progress.ttl)
    if progress.silent:
        fields.append(
            (
                "silent instances",
                f"{progress.silent} (missed two heartbeats: is the agent running? they stop "
                f"counting {ttl} after their last heartbeat)",
            )
        )
    if progress.dead:
        fields.append(("dead instances", f"{progress.dead} (no heartbeat for {ttl}; not counted)"))
    print_fields(fields)
    waits = wait_lines(progress.waiting_for, progress.read_at)
    if waits:
        click.echo("\nwaiting for:\n" + "\n".join(f"  {line}" for line in waits))
    click.echo("")
    counts = progress.revision_counts()
    width = max((len(str(c["label"])) for c in counts), default=0)
    for count in counts:
        click.echo(_revision_line(count, width))
    if not counts:
        click.echo("no revision has a weight")
    click.echo("")
    print_table(
        ["INSTANCE", "ASSIGNED", "CURRENT", "PHASE", "PROGRESS", "LAST SEEN", "AGENT"],
        [_instance_row(progress, item) for item in progress.instances],
    )


def _duration(value: timedelta) -> str:
    seconds = round(value.total_seconds())
    return f"{seconds} s" if seconds < 120 or seconds % 60 else f"{seconds // 60} min"


def _instance_row(progress: Progress, item: InstanceProgress) -> Sequence[Any]:
    deploy_state, step = step_of(item)
    if item.phase is Phase.SETTLED:
        shown = "-"
    elif item.phase is Phase.FAILED:
        failed_in = item.deploy.failed_in if item.deploy is not None else None
        error = item.deploy.error if item.deploy is not None else None
        shown = f"failed in {failed_in}" if failed_in else "failed"
        shown += f": {error}" if error else ""
    elif step is not None:
        shown = f"{deploy_state} ({step}/{len(HAPPY_PATH)})"
    else:
        shown = str(deploy_state)
    instance = item.instance
    quiet = progress.silent_for(item)
    ago = round(max((progress.read_at - item.last_seen).total_seconds(), 0))
    seen = f"{ago}s ago" if quiet is None else f"silent for {ago}s"
    return [
        instance.id,
        label_of(progress.labels, instance.assigned_revision) or "-",
        label_of(progress.labels, instance.current_revision) or "-",
        phase_word(item),
        shown,
        seen,
        instance.agent_version,
    ]


def is_complete(progress: Progress) -> bool:
    return progress.in_sync and progress.service.rollout_state.status is RolloutStatus.COMPLETE
