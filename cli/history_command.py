"""`flotilla history SERVICE`: what happened to a service, newest first.

Two sources, merged by time: the service history (rollouts started, completed, stopped,
reverted; pauses and resumes, with who and why) and the service's deploys (one instance
moving from one revision to another, with its outcome, the error that failed it and how
long it took). Only what the records hold is shown: revision labels, states and error
texts, never an environment value (those exist only sealed, and are not opened here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from flotilla.cli.options import aws_options, wiring_from
from flotilla.cli.output import output_option, print_json, print_table
from flotilla.engine import validation
from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.errors import ValidationError
from flotilla.engine.operations.names import find_service, label_of, weights_text, with_labels
from flotilla.engine.records import HistoryEntry

MAX_LIMIT = 10_000


def parse_limit(text: str) -> int:
    """--limit, refused in one clear line (click's own error would print the usage too)."""
    value = validation.whole_number(text)
    if value is None or not 1 <= value <= MAX_LIMIT:
        raise ValidationError(
            f"invalid --limit {text[:40]!r}: give a whole number from 1 to {MAX_LIMIT}"
        )
    return value


Line = HistoryEntry | DeployCheckpoint


def _order(line: Line) -> tuple[datetime, int, str]:
    # Within one instant a deploy sorts after (so, newest first, above) the entry that
    # caused it, and deploys by id, so the order never depends on the store's.
    if isinstance(line, DeployCheckpoint):
        return (line.created_at, 1, line.id)
    return (line.at, 0, line.kind)


def merged(entries: Sequence[HistoryEntry], deploys: Sequence[DeployCheckpoint]) -> list[Line]:
    """Newest first; an entry's time is when it was recorded, a deploy's when it began."""
    lines: list[Line] = [*entries, *deploys]
    return sorted(lines, key=_order, reverse=True)


def duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _duration(deploy: DeployCheckpoint, now: datetime) -> float:
    end = deploy.updated_at if deploy.finished else now
    return max(0.0, (end - deploy.created_at).total_seconds())


def _revision(labels: Mapping[str, str], revision: str | None) -> dict[str, Any] | None:
    return None if revision is None else {"id": revision, "label": label_of(labels, revision)}


def line_json(line: Line, labels: Mapping[str, str], now: datetime) -> dict[str, Any]:
    if isinstance(line, HistoryEntry):
        entry = line
        return {
            "at": entry.at.isoformat(),
            "type": "service",
            "kind": entry.kind,
            "reason": entry.reason,
            "weights": [
                {"id": rev, "label": label_of(labels, rev), "weight": w}
                for rev, w in sorted(entry.weights.items())
            ],
        }
    deploy = line
    return {
        "at": deploy.created_at.isoformat(),
        "type": "deploy",
        "kind": "deploy",
        "deploy_id": deploy.id,
        "instance": deploy.instance_id,
        "from_revision": _revision(labels, deploy.from_revision),
        "to_revision": _revision(labels, deploy.to_revision),
        "state": deploy.state,
        "outcome": None if deploy.outcome is None else deploy.outcome.value,
        "failed_in": deploy.failed_in,
        "error": deploy.error,
        "rollback_error": deploy.rollback_error,
        "finished_at": deploy.updated_at.isoformat() if deploy.finished else None,
        "duration_seconds": round(_duration(deploy, now), 3),
    }


def _deploy_detail(deploy: DeployCheckpoint) -> str:
    parts = []
    if deploy.error:
        failed_in = deploy.failed_in
        parts.append(f"failed in {failed_in}: {deploy.error}" if failed_in else deploy.error)
    if deploy.rollback_error:
        parts.append(f"rollback failed: {deploy.rollback_error}")
    return "; ".join(parts)


def line_row(line: Line, labels: Mapping[str, str], now: datetime) -> list[str]:
    if isinstance(line, HistoryEntry):
        entry = line
        when = entry.at.strftime("%Y-%m-%d %H:%M:%S")
        reason = with_labels(entry.reason, labels)  # the scheduler writes ids into reasons
        return [when, entry.kind, "-", weights_text(entry.weights, labels), "-", "-", reason]
    deploy = line
    when = deploy.created_at.strftime("%Y-%m-%d %H:%M:%S")
    before = label_of(labels, deploy.from_revision) or "none"
    moved = f"{before}→{label_of(labels, deploy.to_revision)}"
    outcome = deploy.outcome.value if deploy.outcome else f"running ({deploy.state})"
    duration = duration_text(_duration(deploy, now))
    return [
        when,
        f"deploy {deploy.id}",
        deploy.instance_id,
        moved,
        outcome,
        duration,
        _deploy_detail(deploy),
    ]


@click.command(short_help="Show what happened to a service, newest first.")
@click.argument("service")
@click.option("--limit", default="50", show_default=True, metavar="N", help="Newest N lines")
@output_option
@aws_options
def history(service: str, limit: str, output: str, **options: Any) -> None:
    """Show SERVICE's rollouts, pauses, reverts, undos and deploys, newest first.

    A deploy is named INSTANCE.N, N being the instance's assignment number: an assignment
    that needed no deploy (back to the revision it ran) used a number too, so an
    instance's deploy numbers can skip.
    """
    validation.service_name(service)
    count = parse_limit(limit)
    wiring = wiring_from(options)
    store = wiring.store
    record = find_service(store, service, wiring.settings.environment)
    deploys = store.list_deploys(service)
    labels = {r.id: r.label for r in store.list_revisions(service)}
    now = wiring.clock.now()
    lines = merged(record.history, deploys)[:count]
    if output == "json":
        print_json([line_json(line, labels, now) for line in lines])
        return
    print_table(
        ["TIME (UTC)", "WHAT", "INSTANCE", "REVISIONS", "OUTCOME", "DURATION", "DETAIL"],
        [line_row(line, labels, now) for line in lines],
    )
