"""`flotilla trace rollout SERVICE` and `flotilla trace deploy DEPLOY_ID`: the trace viewer.

Reads the deploy histories from the state store (DynamoDB), or, with `--from-otlp FILE`,
the spans an agent or an OpenTelemetry collector wrote as OTLP JSON, and draws them in
the terminal (one row per instance on a shared time axis) or, with `--html FILE`, as one
self-contained web page. Both sources make the same view (see cli.trace.model); from the
store it also has the revisions' labels and what the scheduler did (the service history),
which spans do not carry.

A service in several regions keeps its deploys in each region's tables: `trace rollout`
draws one section per region, each read from its own region (a region that cannot be
read says so in its section, and the command exits 1), and `--region` narrows it to one.
A page (`--html`) draws one region: for such a service it needs `--region`.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from flotilla.cli.options import aws_options, wiring_from
from flotilla.cli.trace import html, model, terminal
from flotilla.cli.trace.model import DeployRow, RolloutView
from flotilla.engine import validation
from flotilla.engine.errors import FlotillaError, NotFoundError, ValidationError
from flotilla.engine.operations.names import ID_CHARS, find_revision, with_labels
from flotilla.engine.records import Service

if TYPE_CHECKING:  # the composition root imports boto3: --from-otlp needs none of it
    from flotilla.cli.wiring import Wiring

F = TypeVar("F", bound=Callable[..., Any])
MAX_DEPLOY_ID = 1024  # DynamoDB allows 2048 bytes in a partition key; ids are far shorter
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@click.group(short_help="Show a rollout or one deploy as a timeline.")
def trace() -> None:
    """Show a rollout or one deploy as a timeline: states, durations, crashes, errors."""


def _view_options(command: F) -> F:
    options = [
        click.option(
            "--html",
            "html_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the timeline as one self-contained web page to FILE",
        ),
        click.option(
            "--from-otlp",
            "otlp_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Read spans from an OTLP JSON file (agent --trace-file, collector file "
            "exporter) instead of the deploy histories",
        ),
        click.option(
            "--color",
            "colour",
            type=click.Choice(["auto", "always", "never"]),
            default="auto",
            show_default=True,
            help="Colour in the terminal (auto: on a terminal unless NO_COLOR is set)",
        ),
        click.option("--width", type=click.IntRange(40, 1000), help="Columns to draw in"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@trace.command(short_help="Every deploy of a service's rollout.")
@click.argument("service")
@click.option(
    "--revision", help="The rollout to this revision (label or id prefix) [default: the latest]"
)
@click.option("--since", help="Only deploys started since: a duration (30m, 6h, 2d) or an ISO time")
@_view_options
@aws_options
def rollout(
    service: str, revision: str | None, since: str | None, html_file: Path | None,
    otlp_file: Path | None, colour: str, width: int | None, **options: Any,
) -> None:  # fmt: skip
    """Every deploy of SERVICE's rollout: one row per instance, one segment per state.

    Without --revision, the rollout of the revision deployed most recently. A service in
    several regions is drawn region by region, each read from its own region; --region
    narrows it to one, as --html requires for such a service (one page, one region).
    """
    validation.service_name(service)
    now = datetime.now(UTC)
    since_time = parse_since(since, now) if since else None
    if otlp_file is None:
        wanted = Wanted(service, revision, since, since_time)
        _rollout_from_store(wiring_from(options), wanted, html_file, colour, width)
        return
    if revision is not None and not re.fullmatch(r"[0-9a-fA-F]{1,64}", revision):
        raise ValidationError(
            f"with --from-otlp, --revision takes a revision id or id prefix, not a label "
            f"({revision[:40]!r}): spans carry ids only; see `flotilla revision list {service}`"
        )
    rows = model.select_rollout(
        _otlp_rows(otlp_file), service=service, revision=revision, since=since_time
    )
    if not rows:
        raise NoDeploys(service, revision, since, f"in {otlp_file}")
    view = _rollout_view(rows, service, label=None, labels={}, events=[], now=now)
    _show(view, html_file, colour, width)


class NoDeploys(NotFoundError):
    """No deploy of the rollout asked for (in one region, for a service in several)."""

    def __init__(self, service: str, revision: str | None, since: str | None, source: str) -> None:
        where = f" since {since}" if since else ""
        to = f" to revision {revision[:ID_CHARS]}" if revision else ""
        super().__init__(
            f"no deploys of service {service!r}{to}{where} {source}; "
            "check the service name, --revision and --since"
        )


@dataclass(frozen=True)
class Wanted:
    """The rollout asked for: the service, --revision and --since (as given and read)."""

    service: str
    revision: str | None
    since: str | None
    since_time: datetime | None


def _rollout_from_store(
    wiring: Wiring, wanted: Wanted, html_file: Path | None, colour: str, width: int | None
) -> None:
    """From the deploy histories: a service of one region as always; one in several
    regions a section per region (`cli.regional_status`), or one region's page."""
    from flotilla.cli.regional_status import (
        failed_regions,
        read_region,
        region_heading,
        regional_service,
    )
    from flotilla.cli.regions import in_region

    record, regions = regional_service(wiring, wanted.service)
    if not record.regions:
        _show(_store_view(wiring, record, wanted, region=None), html_file, colour, width)
        return
    if html_file is not None:
        if len(regions) > 1:
            raise ValidationError(
                f"--html draws one region, and {wanted.service} is in {', '.join(regions)}: "
                "give --region REGION, a page for each region"
            )
        page = in_region(regions[0], _region_view, wiring, regions[0], record, wanted)
        if isinstance(page, NoDeploys):
            raise page
        _show(page, html_file, colour, width)
        return
    readings = [
        read_region(region, _region_view, wiring, region, record, wanted) for region in regions
    ]
    wanted_colour = terminal.colour_wanted(sys.stdout, colour)
    columns = width or shutil.get_terminal_size((120, 24)).columns
    empty: list[str] = []
    for number, reading in enumerate(readings):
        if number:
            click.echo("")
        click.echo(region_heading(reading.region, home=reading.region == record.regions[0]))
        if reading.error is not None:
            click.echo(reading.error)
            continue
        view = reading.value
        if isinstance(view, NoDeploys):
            click.echo(view.message)
            empty.append(reading.region)
            continue
        text = terminal.render(view, width=columns, colour=wanted_colour)
        click.echo(text, nl=False, color=wanted_colour)
    failed_regions(readings)
    if len(empty) == len(readings):
        raise NoDeploys(wanted.service, wanted.revision, wanted.since, "in any of its regions")


def _region_view(
    wiring: Wiring, region: str, entry: Service, wanted: Wanted
) -> RolloutView | NoDeploys:
    """`region`'s part of the rollout, read there; no deploys there is an answer, not
    a failure (the rollout may not have reached that region)."""
    from flotilla.cli.regional_status import region_record

    there = wiring.in_region(region)
    record = region_record(there, entry.name, entry if region == wiring.region else None)
    try:
        return _store_view(there, record, wanted, region=region)
    except NoDeploys as nothing:
        return nothing


def _store_view(
    wiring: Wiring, record: Service, wanted: Wanted, *, region: str | None
) -> RolloutView:
    """The rollout as `wiring`'s store has it; `region` named in its title."""
    store = wiring.store
    service = record.name
    revisions = store.list_revisions(service)
    labels = {r.id: r.label for r in revisions}
    revision = wanted.revision
    if revision is not None:
        revision = find_revision(revisions, revision, service).id
    checkpoints = store.list_deploys(service, since=wanted.since_time)
    rows = model.select_rollout(
        (model.row_from_checkpoint(c) for c in checkpoints),
        service=service,
        revision=revision,
        since=wanted.since_time,
    )
    if not rows:
        source = f"in region {region}" if region else "in the deploy histories"
        raise NoDeploys(service, revision, wanted.since, source)
    events = [
        replace(e, text=with_labels(e.text, labels))  # ids the scheduler wrote, as labels
        for e in model.events_of(record.history, rows)
    ]
    label = labels.get(rows[0].to_revision)
    now = wiring.clock.now()
    return _rollout_view(rows, service, label, labels, events, now, region=region)


def _rollout_view(
    rows: Sequence[DeployRow], service: str, label: str | None, labels: dict[str, str],
    events: list[model.RolloutEvent], now: datetime, *, region: str | None = None,
) -> RolloutView:  # fmt: skip
    target = rows[0].to_revision[:ID_CHARS]
    title = (
        f"rollout of {service} to {label} ({target})"
        if label
        else f"rollout of {service} to {target}"
    )
    if region is not None:
        title += f" in {region}"
    return model.view_of(rows, now=now, title=title, labels=labels, events=events)


@trace.command(short_help="One deploy of one instance.")
@click.argument("deploy_id")
@_view_options
@aws_options
def deploy(
    deploy_id: str, html_file: Path | None, otlp_file: Path | None, colour: str,
    width: int | None, **options: Any,
) -> None:  # fmt: skip
    """One deploy (an instance moving to a revision) as a timeline, e.g. DEPLOY_ID i-0abc.3.

    N in INSTANCE.N is the instance's assignment number, so an instance's deploy numbers
    can skip (an assignment back to the revision it runs needs no deploy).
    """
    if not deploy_id or len(deploy_id.encode("utf-8", "surrogateescape")) > MAX_DEPLOY_ID:
        # DynamoDB refuses such a key outright; say so before asking it.
        raise ValidationError(
            f"invalid deploy id {deploy_id[:40]!r}: deploy ids look like INSTANCE.N "
            "(e.g. i-0abc.3); see `flotilla trace rollout SERVICE`"
        )
    if otlp_file is not None:
        rows = [r for r in _otlp_rows(otlp_file) if r.deploy_id == deploy_id]
        if not rows:
            raise NotFoundError(f"no spans of deploy {deploy_id[:80]!r} in {otlp_file}")
        now = datetime.now(UTC)
        labels: dict[str, str] = {}
    else:
        wiring = wiring_from(options)
        try:
            checkpoint = wiring.store.get_deploy(deploy_id)
        except NotFoundError as exc:
            raise NotFoundError(
                f"deploy {deploy_id[:80]!r} does not exist in environment "
                f"{wiring.settings.environment!r}; deploy ids look like INSTANCE.N, see "
                "`flotilla trace rollout SERVICE`"
            ) from exc
        rows = [model.row_from_checkpoint(checkpoint)]
        now = wiring.clock.now()
        labels = {r.id: r.label for r in wiring.store.list_revisions(checkpoint.service)}
    row = rows[0]
    title = f"deploy {row.deploy_id} of {row.service} on {row.instance_id}"
    _show(model.view_of(rows, now=now, title=title, labels=labels), html_file, colour, width)


def _otlp_rows(path: Path) -> Sequence[DeployRow]:
    try:
        with path.open(encoding="utf-8") as lines:
            return model.rows_from_otlp_text(lines)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read {path}: {exc}") from exc


def _show(view: RolloutView, html_file: Path | None, colour: str, width: int | None) -> None:
    if html_file is not None:
        page = html.render(view)
        try:
            html_file.write_text(page, encoding="utf-8")
        except OSError as exc:  # a missing directory, no permission, a full disk
            raise FlotillaError(
                f"cannot write {str(html_file)[:200]!r}: {exc.strerror or exc}; "
                "check that its directory exists and is writable"
            ) from exc
        click.echo(
            f"wrote {html_file} ({len(view.rows)} deploys, {len(page.encode()) // 1024} KiB); "
            f"open it in a browser",
            err=True,
        )
        return
    wanted = terminal.colour_wanted(sys.stdout, colour)
    columns = width or shutil.get_terminal_size((120, 24)).columns
    click.echo(terminal.render(view, width=columns, colour=wanted), nl=False, color=wanted)


def parse_since(text: str, now: datetime) -> datetime:
    """`30m`, `6h`, `2d`, `1w` before now, or an ISO 8601 time (UTC when no zone is given)."""
    matched = _DURATION.match(text)
    if matched:
        try:
            return now - timedelta(seconds=float(matched.group(1)) * _UNITS[matched.group(2)])
        except OverflowError as exc:  # e.g. 99999999999999d: before the year 1
            raise ValidationError(
                f"invalid --since {text[:40]!r}: a duration that long reaches before the year 1"
            ) from exc
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationError(
            f"invalid --since {text[:40]!r}: give a duration like 30m, 6h, 2d or an ISO time "
            "like 2026-01-31T08:00:00Z"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
