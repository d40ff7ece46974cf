"""The regions an environment spans, as its stack in the entry region says.

`flotilla init --region A --region B` gives each region's stack the whole list (the
template's parameter and output `EnvironmentRegions`, home region first), so any region
can tell where the others are. A stack made before that output existed, or given no
list, is its own region alone. Commands that change what every region keeps (the
stacks themselves, users and their keys) read every region first, then write to each
in order (`apply_everywhere`, as `cli.regions` describes); `read_user_everywhere` and
`write_user_everywhere` do so for the user commands (`cli.user_commands`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from flotilla.cli.regions import RegionUnreachable, in_region, parse_regions, say_region
from flotilla.cli.stack_deploy import environment_stack_name
from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import (
    ConfigurationError,
    FlotillaError,
    NotFoundError,
    ValidationError,
)
from flotilla.engine.ports import UserStore
from flotilla.engine.users import User

T = TypeVar("T")

REGIONS_OUTPUT = "EnvironmentRegions"  # the environment stack's output and parameter


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


# --- users: the environment's, kept in each of its regions ------------------------------


def read_user_everywhere(wiring: Wiring, name: str) -> dict[str, User | None]:
    """The user `name` in each region of the environment (None where it has no record),
    home region first: every region is read before any is written."""
    found: dict[str, User | None] = {}
    regions = environment_regions(wiring)
    for region in regions:
        try:
            found[region] = in_region(region, wiring.in_region(region).users.get_user, name)
        except NotFoundError:
            found[region] = None
        except ConfigurationError as exc:  # e.g. a region whose stack was never made
            if len(regions) == 1:
                raise
            raise ConfigurationError(f"region {region}: {exc.message}") from exc
    return found


def write_user_everywhere(
    wiring: Wiring,
    found: dict[str, User | None],
    write: Callable[[UserStore, User | None], User | None],
    output: str,
    gone: str = "no such user here: nothing to change",
) -> User | None:
    """`write(store, user as read)` in each region of `found` in turn; the user as the
    entry region holds it then (or the first region that has it). A region's outcome is
    the user's version there, or `gone` where it has no record."""

    def step(region: str) -> User | None:
        return write(wiring.in_region(region).users, found[region])

    def said(record: User | None) -> str:
        return gone if record is None else f"user {record.name}, version {record.version}"

    done = apply_everywhere(list(found), step, said, output)
    held = [record for record in done.values() if record is not None]
    return done.get(wiring.region) or next(iter(held), None)
