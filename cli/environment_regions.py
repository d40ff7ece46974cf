"""The regions an environment spans, as its stack in the entry region says.

`flotilla init --region A --region B` gives each region's stack the whole list (the
template's parameter and output `EnvironmentRegions`, home region first), so any region
can tell where the others are. A stack made before that output existed, or given no
list, is its own region alone. Commands that change what every region keeps (the
stacks themselves, users and their keys) read every region first, then write to each
in order (`apply_everywhere`, as `cli.regions` describes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from flotilla.cli.regions import RegionUnreachable, in_region, say_region
from flotilla.cli.stack_deploy import environment_stack_name
from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import ConfigurationError, FlotillaError, ValidationError
from flotilla.engine.validation import region_list

T = TypeVar("T")

REGIONS_OUTPUT = "EnvironmentRegions"  # the environment stack's output and parameter


def parse_regions(text: str, where: str) -> tuple[str, ...]:
    """`a,b` (spaces allowed) as a checked tuple; empty text is no region."""
    return region_list([part.strip() for part in text.split(",") if part.strip()], where)


def environment_regions(wiring: Wiring) -> tuple[str, ...]:
    """The environment's regions, home region first, as its stack in `wiring`'s region
    gives them; that region alone for a stack that names none."""
    environment = wiring.settings.environment
    region = wiring.region
    stack = environment_stack_name(environment)
    stacks = wiring.stacks
    if in_region(region, stacks.status, stack) is None:
        raise ConfigurationError(
            f"environment {environment!r} has no stack {stack} in {region}: create it "
            "with `flotilla init` first"
        )
    text = in_region(region, stacks.outputs, stack).get(REGIONS_OUTPUT, "")
    try:
        regions = parse_regions(text, f"the output {REGIONS_OUTPUT} of stack {stack}")
    except ValidationError as exc:  # not the user's input: the stack's
        raise ConfigurationError(f"{exc.message}; run `flotilla init` again") from exc
    if not regions:
        return (region,)
    if region not in regions:
        raise ConfigurationError(
            f"stack {stack} in {region} says environment {environment!r} spans "
            f"{', '.join(regions)}, which leaves out {region} itself: run `flotilla init` "
            "with every --region of the environment"
        )
    return regions


def apply_everywhere(
    regions: Sequence[str], step: Callable[[str], T], said: Callable[[T], str], output: str
) -> dict[str, T]:
    """`step(region)` in each region in order, once every region has been read (staged,
    `cli.regions`); with several regions, each region's outcome (`said`) is said. A region
    that fails stops it there, in one line naming what was done and how to finish."""
    done: dict[str, T] = {}
    for region in regions:
        try:
            done[region] = in_region(region, step, region)
        except FlotillaError as exc:
            if len(regions) == 1:
                raise
            raise FlotillaError(stopped_in(region, exc, list(done), regions)) from exc
        if len(regions) > 1:
            say_region(region, said(done[region]), output=output)
    return done


def stopped_in(
    region: str, failure: FlotillaError, done: Sequence[str], regions: Sequence[str]
) -> str:
    """Where a command over several regions stopped, what it had done, how to finish."""
    reason = (
        failure.message
        if isinstance(failure, RegionUnreachable)
        else f"region {region}: {failure.message}"
    )
    left = [r for r in regions if r not in done]
    finished = f"done in {', '.join(done)}" if done else "no region done"
    return f"{reason}; {finished}, not in {', '.join(left)}: run the same command again to finish"
