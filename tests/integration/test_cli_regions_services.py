"""A service of several regions: created, updated and deleted in each, staged (issue 18),
on one moto server with a proxy per region (`tests.integration.regions_world`)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from flotilla.engine.records import Service
from tests.integration.regions_world import REGIONS, A, B, C, World, regions_world, wait_for


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with regions_world("svc", tmp_path_factory.mktemp("svc")) as made:
        yield made


def regions_args(*regions: str) -> list[str]:
    return [arg for region in regions for arg in ("--region", region)]


def test_create_makes_the_service_in_each_region_and_finishes_a_partial_run(world: World) -> None:
    world.proxies[C].down()
    try:
        with world.unchanged():
            refused = world.cli.run(
                "service", "create", "made", *regions_args(*REGIONS), env=world.variables,
                with_region=False,
            )  # fmt: skip
    finally:
        world.proxies[C].up()
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: region {C} is unreachable")
    # Made in A alone (as a run cut short after A would leave it), then finished.
    world.wirings[A].store.create_service(Service("made"))
    made = world.cli.run(
        "service", "create", "made", *regions_args(*REGIONS), env=world.variables,
        with_region=False,
    )  # fmt: skip
    assert made.returncode == 2, made.stderr  # A's record names no regions: refused
    assert "exists in eu-west-1 already" in made.stderr
    stray = world.wirings[A].store.get_service("made")  # its scheduler may have written it
    world.wirings[A].store.delete_service("made", expected_version=stray.version)
    first = world.cli.run(
        "service", "create", "made", *regions_args(*REGIONS), "-o", "json", env=world.variables,
        with_region=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["regions"] == list(REGIONS)
    for region in REGIONS:
        assert f"{region}: created made" in first.stderr
        assert world.wirings[region].store.get_service("made").regions == REGIONS
    again = world.cli.run(
        "service", "create", "made", *regions_args(*REGIONS), env=world.variables,
        with_region=False,
    )  # fmt: skip
    assert again.returncode == 1
    assert "exists already in every region it names" in again.stderr


def test_update_changes_every_region_or_none(world: World) -> None:
    """Entered through us-east-1, as the CLI's tests do: the others are reached from it."""
    world.service("tuned")
    updated = world.run("service", "update", "tuned", "--max-in-flight", "3")
    assert updated.returncode == 0, updated.stderr
    for region in REGIONS:
        assert world.wirings[region].store.get_service("tuned").rollout.max_in_flight == "3"
        assert f"{region}: updated tuned" in updated.stderr
    world.proxies[C].down()
    try:
        with world.unchanged():
            refused = world.run("service", "update", "tuned", "--max-in-flight", "5")
    finally:
        world.proxies[C].up()
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: region {C} is unreachable")


def test_delete_deletes_in_every_region(world: World) -> None:
    world.service("gone", "v1")
    world.ok("weights", "gone", "v1=100")
    for region in REGIONS:
        wait_for(f"{region} on v1", lambda region=region: world.running(region, "gone") == {"v1"})
    refused = world.run("service", "delete", "gone", "--expected-version", "1")
    assert refused.returncode == 2
    assert "--expected-version is one region's" in refused.stderr
    deleted = world.run("service", "delete", "gone", "--wait", "--interval", "0.3")
    assert deleted.returncode == 0, deleted.stderr
    for region in REGIONS:
        assert f"{region}: deleted service gone" in deleted.stdout
        assert "gone" not in [s.name for s in world.wirings[region].store.list_services()]
        assert world.running(region, "gone") == {None}  # every instance was unassigned first


def test_steering_acts_on_one_region_and_says_so(world: World) -> None:
    world.service("steered")
    paused = world.cli.run(
        "rollout", "pause", "steered", "--region", A, env=world.variables, with_region=False
    )
    assert paused.returncode == 0, paused.stderr
    assert f"(in {A} only; steered is also in {B}, {C}: --region)" in paused.stdout
    assert world.wirings[A].store.get_service("steered").paused
    assert not world.wirings[B].store.get_service("steered").paused
    assert not world.wirings[C].store.get_service("steered").paused
