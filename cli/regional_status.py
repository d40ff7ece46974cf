"""`flotilla rollout status` of a service in several regions: a section per region.

Each region keeps its own tables and scheduler, so each region's rollout is read through
that region's own wiring and shown as `rollout status` shows a service of one region
(`cli.progress`), under a heading naming the region. A region that cannot be read gets
its section saying why in one line; the others are still shown, and the command exits 1
at the end. Before the sections, a rollout in waves (`Service.waves`, kept on the home
region's record) is summed up: each wave's region and where it stands.

`--region R` given on the command line narrows the output to R, read from R alone; the
waves are then shown only when R is the home region (they live on its record). A service
of one region is shown exactly as before, JSON included: scripts rely on that shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click

from flotilla.cli.follow import show_progress
from flotilla.cli.output import print_json
from flotilla.cli.progress import Progress, print_progress, progress_json, read_progress
from flotilla.cli.regions import in_region, service_there
from flotilla.cli.rollout_waits import gate_readings
from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import FlotillaError
from flotilla.engine.operations.names import find_service
from flotilla.engine.records import Service, Wave, WavePlan, WaveStatus

T = TypeVar("T")


def region_given(wiring: Wiring) -> bool:
    """Whether `--region` was given on the command line (a variable or a profile's region
    does not narrow a command over several regions: it only says where to start)."""
    return wiring.settings.sources.get("region") == "--region"


def region_heading(region: str, *, home: bool) -> str:
    """The line above a region's section, in every command that shows one per region."""
    return f"=== region {region}{' (home)' if home else ''} ==="


@dataclass(frozen=True)
class RegionReading:
    """What one region answered: a value, or the one line saying why it could not."""

    region: str
    value: Any = None
    error: str | None = None


def read_region(region: str, call: Callable[..., T], *args: Any) -> RegionReading:
    """`call(*args)` for `region`, its failure kept as one line instead of raised."""
    try:
        return RegionReading(region, in_region(region, call, *args))
    except FlotillaError as exc:
        text = exc.message
        return RegionReading(region, error=text if region in text else f"region {region}: {text}")


def failed_regions(readings: Sequence[RegionReading]) -> None:
    """After every section is shown: exit 1, saying which regions could not be read."""
    failed = [r.region for r in readings if r.error is not None]
    if failed:
        raise FlotillaError(
            f"{len(failed)} of {len(readings)} regions could not be read "
            f"({', '.join(failed)}); the others are shown above"
        )


def regional_service(wiring: Wiring, name: str) -> tuple[Service, tuple[str, ...]]:
    """The service as the command's own region has it, and the regions to show: that
    region alone when `--region` was given or the service has one region, else all."""
    record = in_region(wiring.region, find_service, wiring.store, name, wiring.settings.environment)
    if region_given(wiring) or not record.regions:
        return record, (wiring.region,)
    return record, record.regions


def region_record(there: Wiring, name: str, known: Service | None) -> Service:
    """`name` as the region of `there` has it (`known` when it was read there already)."""
    return known if known is not None else service_there(there, name)


# --- rollout status ---------------------------------------------------------------------


def rollout_status(wiring: Wiring, name: str, output: str) -> None:
    """`flotilla rollout status NAME`, over the regions it is in."""
    record, regions = regional_service(wiring, name)
    if not record.regions:  # a service of one region: as it always was
        show_progress(_progress(wiring, name, record), output)
        return
    readings = [read_region(region, _progress_in, wiring, region, record) for region in regions]
    home = record.regions[0]
    plan = next(
        (r.value.service.waves for r in readings if r.region == home and r.value is not None),
        None,
    )
    now = wiring.clock.now()
    if output == "json":
        print_json(
            {
                "service": name,
                "regions": {
                    r.region: {"error": r.error} if r.error is not None else progress_json(r.value)
                    for r in readings
                },
                "waves": None if plan is None else waves_json(plan, now),
            }
        )
    else:
        if plan is not None:
            print_waves(plan, now)
            click.echo("")
        for number, reading in enumerate(readings):
            if number:
                click.echo("")
            click.echo(region_heading(reading.region, home=reading.region == home))
            if reading.error is not None:
                click.echo(reading.error)
            else:
                print_progress(reading.value)
    failed_regions(readings)


def _progress_in(wiring: Wiring, region: str, entry: Service) -> Progress:
    """`region`'s rollout, read there (`entry`: the service as the command's region has it)."""
    there = wiring.in_region(region)
    return _progress(there, entry.name, entry if region == wiring.region else None)


def _progress(there: Wiring, name: str, known: Service | None) -> Progress:
    record = region_record(there, name, known)
    readings = gate_readings(there, record)
    return read_progress(there.store, record, there.clock.now(), readings=readings)


# --- waves ------------------------------------------------------------------------------


def wave_state(plan: WavePlan, index: int, now: datetime) -> tuple[str, str]:
    """Where wave `index` stands: a word for scripts and the words for a person."""
    wave = plan.waves[index]
    current = plan.current
    if wave.undone:
        return "undone", "undone: its weights were set back when the waves stopped"
    if wave.completed_at is not None:
        bake_until = _bake_until(plan, index)
        if bake_until is not None and now < bake_until:
            return "baking", f"baking until {_time(bake_until)}"
        return "done", "done"
    if plan.status is WaveStatus.HELD and index == current:
        return "held", f"held: {plan.reason or 'no reason recorded'}"
    if plan.status is WaveStatus.STOPPED:
        if wave.applied or index == current:
            return "stopped", "stopped"
        return "not_started", "not started: the waves stopped before it"
    if wave.applied:
        return "rolling", "rolling"
    return "waiting", "waiting"


def _bake_until(plan: WavePlan, index: int) -> datetime | None:
    """When the bake after wave `index` ends, while the next wave has not begun."""
    wave = plan.waves[index]
    later = plan.waves[index + 1 :]
    if wave.completed_at is None or not later or later[0].applied or plan.finished:
        return None
    return wave.completed_at + timedelta(seconds=plan.bake_seconds)


def print_waves(plan: WavePlan, now: datetime) -> None:
    click.echo(
        f"waves: {plan.status.value} (plan {plan.number} by {plan.by}, began "
        f"{_time(plan.started_at)}; bake {plan.bake_seconds} s between regions, on failure "
        f"{plan.failure_action.value})"
    )
    if plan.reason:
        click.echo(f"because: {plan.reason}")
    width = max(len(wave.region) for wave in plan.waves)
    for index, wave in enumerate(plan.waves):
        click.echo(f"  {index + 1}. {wave.region:<{width}}  {wave_state(plan, index, now)[1]}")


def waves_json(plan: WavePlan, now: datetime) -> dict[str, Any]:
    return {
        "number": plan.number,
        "status": plan.status.value,
        "reason": plan.reason,
        "current": plan.current,
        "bake_seconds": plan.bake_seconds,
        "failure_action": plan.failure_action.value,
        "by": plan.by,
        "started_at": plan.started_at.isoformat(),
        "stop_all": plan.stop_all,
        "waves": [_wave_json(plan, index, wave, now) for index, wave in enumerate(plan.waves)],
    }


def _wave_json(plan: WavePlan, index: int, wave: Wave, now: datetime) -> dict[str, Any]:
    bake_until = _bake_until(plan, index)
    return {
        "region": wave.region,
        "state": wave_state(plan, index, now)[0],
        "weights": dict(sorted(wave.weights.items())),  # revision ids in that region
        "before": None if wave.before is None else dict(sorted(wave.before.items())),
        "applied_at": _iso(wave.applied_at),
        "completed_at": _iso(wave.completed_at),
        "bake_until": _iso(bake_until),
        "undone": wave.undone,
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") + " UTC"
