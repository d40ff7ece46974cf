"""The rollout view: one row per deploy (an instance moving to a revision), one segment per
visit of a state, built from deploy checkpoints (`from_history`) or from OTLP spans
(`from_otlp`, see `otlp`), so both sources draw the same picture.

Beside the deploys, the view carries what the scheduler did (`events_of`): the service
history's entries of this rollout (started, stopped, reverted, completed, undone, paused,
resumed) and the waves in which its deploys began, read off the deploys themselves (the
scheduler records no entry per wave), and the revisions' labels, so people read `v2`
beside `79dc6ef59467`. Spans carry neither: a view from OTLP alone has ids and no events.

It carries state names, times, attempts, error text (secret-free when stored), ids,
revision ids and labels, and each lifecycle hook's run (its result, exit status, duration
and timeout, never its output): nothing from a revision's environment ever reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flotilla.engine.checkpoint import DeployCheckpoint, HookOutcome
from flotilla.engine.records import HistoryEntry
from flotilla.machines import deploy as machine

RUNNING = "running"  # the outcome word of a deploy that has not finished
OUTCOMES = ("succeeded", "rolled_back", "failed", RUNNING)
INTERRUPTED_ERROR = "interrupted: the agent stopped here"


@dataclass(frozen=True)
class Segment:
    """One visit of a state."""

    state: str
    start: datetime
    end: datetime | None  # None: the deploy is in this state now
    attempt: int = 1
    error: str | None = None
    skipped: bool = False  # a load-balancer state of a service without one
    resumed: bool = False  # this visit began in a restarted agent
    interrupted: bool = False  # the agent stopped during this visit
    span_id: str | None = None
    hooks: tuple[HookOutcome, ...] = ()  # lifecycle hooks run in this visit

    def duration(self, now: datetime) -> timedelta:
        return max((self.end or now) - self.start, timedelta(0))


@dataclass(frozen=True)
class Gap:
    """The time between an interrupted visit and its resume: no agent was working."""

    state: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class DeployRow:
    deploy_id: str
    instance_id: str
    service: str
    from_revision: str | None
    to_revision: str
    trace_id: str | None
    outcome: str  # one of OUTCOMES
    segments: tuple[Segment, ...]
    error: str | None = None  # why the new revision failed
    rollback_error: str | None = None  # why restoring the previous one failed

    @property
    def start(self) -> datetime:
        return self.segments[0].start

    def end(self, now: datetime) -> datetime:
        return max((s.end or now) for s in self.segments)

    def duration(self, now: datetime) -> timedelta:
        return self.end(now) - self.start

    @property
    def gaps(self) -> tuple[Gap, ...]:
        found = []
        for before, after in zip(self.segments, self.segments[1:], strict=False):
            if after.resumed and before.end is not None and after.start >= before.end:
                found.append(Gap(after.state, before.end, after.start))
        return tuple(found)

    @property
    def resumes(self) -> int:
        return sum(1 for s in self.segments if s.resumed)

    @property
    def failed_state(self) -> str | None:
        """The state whose step failed for good, if one did."""
        for segment in self.segments:
            if (
                segment.error
                and not segment.interrupted
                and segment.state != machine.State.ROLLING_BACK
            ):
                return segment.state
        return None

    @property
    def reason(self) -> str | None:
        """One line saying why the deploy did not succeed."""
        if self.error is None:
            return None
        where = self.failed_state
        text = f"{where}: {self.error}" if where else self.error
        if self.rollback_error:
            text += f"; rollback failed: {self.rollback_error}"
        return text


@dataclass(frozen=True)
class StateTotal:
    state: str
    total: timedelta
    longest: timedelta
    longest_instance: str


@dataclass(frozen=True)
class Totals:
    instances: int
    deploys: int
    by_outcome: dict[str, int]
    slowest_state: StateTotal | None
    p50: timedelta | None  # deploy time of finished deploys
    p95: timedelta | None


@dataclass(frozen=True)
class RolloutEvent:
    """Something the scheduler (or an operator through it) did during the rollout."""

    at: datetime
    kind: str  # a history kind (rollout_started, reverted, ...) or WAVE
    text: str  # the history's reason, or what the wave was


WAVE = "wave"
# How close together deploys must begin to count as one wave of the scheduler's.
WAVE_GAP = timedelta(seconds=2)
# History kinds that begin a rollout, and those that end one.
BEGINS = frozenset({"rollout_started", "reverted", "undone"})
ENDS = frozenset({"rollout_complete", "rollout_stopped", "reverted", "held"})


@dataclass(frozen=True)
class RolloutView:
    title: str
    rows: tuple[DeployRow, ...]
    now: datetime  # open segments are drawn up to this moment
    labels: Mapping[str, str] = field(default_factory=dict)  # revision id -> label
    events: tuple[RolloutEvent, ...] = ()  # by time

    @property
    def start(self) -> datetime:
        moments = [*(r.start for r in self.rows), *(e.at for e in self.events)]
        return min(moments, default=self.now)

    @property
    def end(self) -> datetime:
        moments = [*(r.end(self.now) for r in self.rows), *(e.at for e in self.events)]
        return max(moments, default=self.now)

    def revision_text(self, revision: str | None) -> str:
        """`v2 (79dc6ef59467)`, or the id's first 12 characters when no label is known."""
        if not revision:  # None, or "" (an unassignment's target)
            return "none"
        label = self.labels.get(revision)
        return f"{label} ({revision[:12]})" if label else revision[:12]

    @property
    def failures(self) -> tuple[DeployRow, ...]:
        """The deploys that did not succeed, with why, in the order they began."""
        return tuple(r for r in self.rows if r.reason is not None)

    @property
    def outcome(self) -> str:
        outcomes = {r.outcome for r in self.rows}
        for word in (RUNNING, "failed", "rolled_back"):
            if word in outcomes:
                return word
        return "succeeded" if outcomes else "empty"

    def totals(self) -> Totals:
        by_outcome = dict.fromkeys(OUTCOMES, 0)
        for row in self.rows:
            by_outcome[row.outcome] += 1
        finished = sorted(r.duration(self.now) for r in self.rows if r.outcome != RUNNING)
        return Totals(
            instances=len({r.instance_id for r in self.rows}),
            deploys=len(self.rows),
            by_outcome=by_outcome,
            slowest_state=_slowest_state(self.rows, self.now),
            p50=percentile(finished, 50),
            p95=percentile(finished, 95),
        )


def percentile(ordered: Sequence[timedelta], rank: float) -> timedelta | None:
    """Nearest-rank percentile of sorted values (no interpolation: a real deploy's time)."""
    if not ordered:
        return None
    index = max(math.ceil(rank / 100 * len(ordered)) - 1, 0)
    return ordered[index]


def _slowest_state(rows: Iterable[DeployRow], now: datetime) -> StateTotal | None:
    """The state the rollout spent most time in, over all instances."""
    totals: dict[str, timedelta] = {}
    longest: dict[str, tuple[timedelta, str]] = {}
    for row in rows:
        for segment in row.segments:
            took = segment.duration(now)
            totals[segment.state] = totals.get(segment.state, timedelta(0)) + took
            if segment.state not in longest or took > longest[segment.state][0]:
                longest[segment.state] = (took, row.instance_id)
    if not totals:
        return None
    state = max(totals, key=lambda name: totals[name])
    took, instance = longest[state]
    return StateTotal(state, totals[state], took, instance)


# --- from the deploy histories --------------------------------------------------------


def row_from_checkpoint(checkpoint: DeployCheckpoint) -> DeployRow:
    history = checkpoint.history
    segments = []
    for index, visit in enumerate(history):
        following = history[index + 1] if index + 1 < len(history) else None
        interrupted = bool(following and following.resumed and following.state == visit.state)
        segments.append(
            Segment(
                state=visit.state,
                start=visit.started_at,
                end=visit.ended_at,
                attempt=visit.attempt,
                error=visit.error,
                skipped=visit.skipped,
                resumed=visit.resumed,
                interrupted=interrupted,
                span_id=visit.span_id,
                hooks=visit.hooks,
            )
        )
    if not segments:  # a checkpoint always has its first visit; be safe with old items
        segments.append(Segment(checkpoint.state, checkpoint.created_at, None))
    return DeployRow(
        deploy_id=checkpoint.id,
        instance_id=checkpoint.instance_id,
        service=checkpoint.service,
        from_revision=checkpoint.from_revision,
        to_revision=checkpoint.to_revision or "",  # "": an unassignment, as in its spans
        trace_id=trace_id_of(checkpoint.trace_parent),
        outcome=str(checkpoint.outcome) if checkpoint.outcome is not None else RUNNING,
        segments=tuple(segments),
        error=checkpoint.error,
        rollback_error=checkpoint.rollback_error,
    )


def hook_text(run: HookOutcome) -> str:
    """One hook's run in a few words: `validate exit 7 after 0.4s`."""
    took = f"{run.duration_seconds:.1f}s"
    if run.succeeded:
        how = f"ok in {took}"
    elif run.result == "timeout":
        how = f"stopped at its timeout of {run.timeout_seconds}s"
    elif run.exit_status is not None:
        how = f"exit {run.exit_status} after {took}"
    else:
        how = f"{run.result} after {took}"
    return f"{run.hook} {how}"


def trace_id_of(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def from_history(
    checkpoints: Iterable[DeployCheckpoint], *, now: datetime, title: str
) -> RolloutView:
    return view_of((row_from_checkpoint(c) for c in checkpoints), now=now, title=title)


def from_otlp(lines: Iterable[str], *, now: datetime, title: str) -> RolloutView:
    """The same view from OTLP JSON (one export request per line, or one whole document)."""
    return view_of(rows_from_otlp_text(lines), now=now, title=title)


def rows_from_otlp_text(lines: Iterable[str]) -> list[DeployRow]:
    from flotilla.cli.trace.otlp import rows_from_otlp  # otlp imports this module's types

    return rows_from_otlp(lines)


def view_of(
    rows: Iterable[DeployRow],
    *,
    now: datetime,
    title: str,
    labels: Mapping[str, str] | None = None,
    events: Iterable[RolloutEvent] = (),
) -> RolloutView:
    ordered = sorted(rows, key=lambda r: (r.start, r.instance_id, r.deploy_id))
    return RolloutView(
        title=title,
        rows=tuple(ordered),
        now=now,
        labels=dict(labels or {}),
        events=tuple(sorted(events, key=lambda e: e.at)),  # stable: the history's order
    )


# --- what the scheduler did ------------------------------------------------------------


def events_of(history: Sequence[HistoryEntry], rows: Sequence[DeployRow]) -> list[RolloutEvent]:
    """The scheduler's part in the rollout of `rows`: the history entries from the change
    that began it (the latest start, revert or undo at or before its first deploy) up to
    its last deploy, and the entry that ended it after that; and its waves."""
    if not rows:
        return []
    first = min(r.start for r in rows)
    last = max(r.end(r.start) for r in rows)  # open visits count up to where they began
    began = [e for e in history if e.kind in BEGINS and e.at <= first]
    since = began[-1].at if began else first
    events = [RolloutEvent(e.at, e.kind, e.reason) for e in history if since <= e.at <= last]
    after = [e for e in history if e.at > last and (e.kind in ENDS or e.kind in BEGINS)]
    if after and after[0].kind in ENDS:  # what ended it (a stop and its revert come together)
        ended = after[0].at
        events += [RolloutEvent(e.at, e.kind, e.reason) for e in after if e.at == ended]
    return [*events, *waves(rows)]


def waves(rows: Sequence[DeployRow]) -> list[RolloutEvent]:
    """Deploys that began within `WAVE_GAP` of a wave's first are that wave."""
    found: list[tuple[datetime, list[DeployRow]]] = []
    for row in sorted(rows, key=lambda r: (r.start, r.instance_id)):
        if found and row.start - found[-1][0] <= WAVE_GAP:
            found[-1][1].append(row)
        else:
            found.append((row.start, [row]))
    events = []
    for number, (at, members) in enumerate(found, start=1):
        names = ", ".join(r.instance_id for r in members[:5])
        more = f" and {len(members) - 5} more" if len(members) > 5 else ""
        count = f"{len(members)} deploy{'s' if len(members) > 1 else ''}"
        events.append(RolloutEvent(at, WAVE, f"wave {number}: {count} began ({names}{more})"))
    return events


# --- choosing the deploys of one rollout ------------------------------------------------


def select_rollout(
    rows: Iterable[DeployRow],
    *,
    service: str,
    revision: str | None = None,
    since: datetime | None = None,
) -> list[DeployRow]:
    """The deploys of `service` to `revision` (an id or id prefix), started since `since`.

    Without a revision: the deploys to the revision of the most recently started deploy,
    which is the service's latest rollout.
    """
    chosen = [r for r in rows if r.service == service and (since is None or r.start >= since)]
    if revision is None:
        if not chosen:
            return []
        revision = max(chosen, key=lambda r: (r.start, r.deploy_id)).to_revision
        return [r for r in chosen if r.to_revision == revision]
    return [r for r in chosen if r.to_revision.startswith(revision.lower())]


def state_order() -> tuple[str, ...]:
    """Every state in the order a legend lists them."""
    return tuple(s for s in machine.STATES if s not in machine.TERMINAL_STATES)
