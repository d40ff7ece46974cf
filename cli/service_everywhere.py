"""`flotilla service create|update|delete` of a service in several regions.

Staged as every command over several regions (`cli.regions`): each region is read first,
then changed region by region, each region's outcome said.

- create (`--region A --region B`): each region reachable, the alarms the policy names
  exist there, the service absent or already made by an earlier run with the same
  regions; then the record is created in each region that lacks it, home region first.
  Running the command again after a region failed finishes the job.
- update: the settings are checked against every region's record (and its alarms in
  that region) before any is written; each region keeps its own weights and rollout.
- delete: every region that still has the record is reached first; each is then deleted
  or marked as being deleted as `service_deletion` does in one region. A region whose
  record is gone already is said to be, so running it again finishes the job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from flotilla.cli.notify import notify_scheduler
from flotilla.cli.policy_options import check_alarms_exist
from flotilla.cli.regions import in_region, read_everywhere, say_region
from flotilla.cli.service_deletion import delete_service, wait_until_deleted
from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import AlreadyExistsError, NotFoundError, ValidationError
from flotilla.engine.records import Service
from flotilla.engine.updates import changeable, modify_service


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


def update_everywhere(
    wiring: Wiring, name: str, change: Callable[[Service], Service], alarms: Sequence[str]
) -> tuple[Service, bool]:
    """Apply `change` (the settings given) to every region's record: the home region's
    record as stored, and whether any region's changed."""
    regional = read_everywhere(wiring, name)
    for region, there in regional.wirings.items():
        change(changeable(regional.services[region]))  # refused here, before any write
        in_region(region, check_alarms_exist, there, alarms, name)
    changed = False
    stored: dict[str, Service] = {}
    for region, there in regional.wirings.items():
        before = regional.services[region]
        stored[region] = in_region(
            region, modify_service, there.store, name, change, current=before
        )
        if stored[region].version != before.version:
            changed = True
            notify_scheduler(there, name)  # a new rollout policy applies from the next pass
            say_region(region, f"updated {name}", output="json")
        else:
            say_region(region, f"{name} unchanged", output="json")
    return stored[regional.home], changed


def delete_everywhere(
    wiring: Wiring, name: str, regions: Sequence[str], *, wait: bool, interval: float,
    timeout: float,
) -> None:  # fmt: skip
    """Delete `name` in each of `regions` that still has it (each reached first)."""
    present: list[str] = []
    for region in regions:
        there = wiring.in_region(region)
        try:
            in_region(region, there.store.get_service, name)
        except NotFoundError:
            say_region(region, f"{name} is deleted already", output="text")
            continue
        present.append(region)
    for region in present:
        in_region(
            region, delete_service, wiring.in_region(region), name, expected_version=None,
            wait=False, interval=interval, timeout=timeout, where=f"{region}: ",
        )  # fmt: skip
    for region in present if wait else ():
        there = wiring.in_region(region)
        in_region(
            region, wait_until_deleted, there, name, interval, timeout, there.clock.sleep,
            where=f"{region}: ",
        )  # fmt: skip
