"""`flotilla service create NAME --region A --region B`: one service in several regions.

Staged as every command over several regions (`cli.regions`): each region is read first
(reachable, the alarms the policy names exist there, the service absent or already made
by an earlier run with the same regions), then the record is created in each region that
lacks it, home region first. Running the command again after a region failed finishes
the job: the regions that have the record are said to, and left as they are.
"""

from __future__ import annotations

from dataclasses import replace

from flotilla.cli.policy_options import check_alarms_exist
from flotilla.cli.regions import in_region, say_region
from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import AlreadyExistsError, NotFoundError, ValidationError
from flotilla.engine.records import Service


def create_everywhere(
    wiring: Wiring, record: Service, regions: tuple[str, ...], output: str
) -> Service:
    """Create `record` in each of `regions` that lacks it; the home region's record."""
    record = replace(record, regions=regions)
    wirings = {region: wiring.in_region(region) for region in regions}
    missing: list[str] = []
    stored: dict[str, Service] = {}
    for region, there in wirings.items():
        try:
            found = in_region(region, there.store.get_service, record.name)
        except NotFoundError:
            in_region(region, check_alarms_exist, there, record.rollout.alarms, record.name)
            missing.append(region)
            continue
        if found.regions != regions:
            named = ", ".join(found.regions) or "its own region alone"
            raise ValidationError(
                f"service {record.name!r} exists in {region} already, in {named}: a service "
                "keeps the regions it was created with; delete it first, or name them all"
            )
        stored[region] = found
    if not missing:
        raise AlreadyExistsError(
            f"service {record.name!r} exists already in every region it names "
            f"({', '.join(regions)})"
        )
    for region in regions:
        if region in missing:
            there = wirings[region]
            stored[region] = in_region(
                region, lambda there=there: there.store.create_service(record)
            )
            say_region(region, f"created {record.name}", output=output)
        else:
            say_region(region, f"{record.name} exists already; left as it is", output=output)
    return stored[regions[0]]
