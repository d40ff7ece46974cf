"""Commands over the several regions of a service or an environment.

Each region keeps its own tables, queue, key and scheduler, so it works on when another
region is unreachable (docs/regions.md). A service names its regions, home region first
(`Service.regions`; a service of one region names none). A command that changes several
regions stages first: it reads what it needs in every one, so that an unreachable region,
or a refusal in any, changes nothing anywhere. Then it applies region by region, saying
each region's outcome; a region that fails then is named, with what was done elsewhere
and how to finish.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from botocore.exceptions import ConnectionError, HTTPClientError

from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import NotFoundError, TransientError
from flotilla.engine.operations.names import find_service
from flotilla.engine.records import Service
from flotilla.engine.validation import region_list

T = TypeVar("T")


class RegionUnreachable(TransientError):
    """A region's endpoints did not answer (after the CLI's own retries)."""

    def __init__(self, region: str, detail: str) -> None:
        super().__init__(f"region {region} is unreachable: {detail}")
        self.region = region


def in_region(region: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call(...)`, its failure to reach the region said as one line naming it."""
    try:
        return call(*args, **kwargs)
    except RegionUnreachable:
        raise
    except TransientError as exc:
        raise RegionUnreachable(region, exc.message) from exc
    except (ConnectionError, HTTPClientError) as exc:
        raise RegionUnreachable(region, type(exc).__name__) from exc


def parse_regions(text: str, where: str) -> tuple[str, ...]:
    """`a,b` (spaces allowed) as a checked tuple; empty text is no region."""
    return region_list([part.strip() for part in text.split(",") if part.strip()], where)


@dataclass(frozen=True)
class Regional:
    """A service as each of its regions has it, read through each region's wiring."""

    wirings: dict[str, Wiring]
    services: dict[str, Service]

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(self.wirings)

    @property
    def home(self) -> str:
        return self.regions[0]


def service_there(there: Wiring, name: str) -> Service:
    """`name` as the region of `there` has it, when another region's record names that
    region: a missing record there is said as the half-made service it is."""
    try:
        return in_region(there.region, there.store.get_service, name)
    except NotFoundError as exc:
        raise NotFoundError(
            f"service {name!r} names region {there.region}, but {there.region} has no record "
            f"of it (created or deleted there alone?); run `flotilla service create {name}` "
            "with every --region it names to make it whole"
        ) from exc


def read_everywhere(wiring: Wiring, name: str) -> Regional:
    """The service `name` in every region it names, read through `wiring`'s region first.
    Any region unreachable, or without the service, is refused in one line before
    anything changes anywhere."""
    environment = wiring.settings.environment
    first = in_region(wiring.region, find_service, wiring.store, name, environment)
    wirings = {region: wiring.in_region(region) for region in first.regions or (wiring.region,)}
    services = {
        region: first if region == wiring.region else service_there(there, name)
        for region, there in wirings.items()
    }
    return Regional(wirings, services)


def say_region(region: str, text: str, *, output: str) -> None:
    """One region's outcome, on standard error when standard output is JSON."""
    click.echo(f"{region}: {text}", err=output == "json")
