"""A service being deleted cannot be changed: every command that would change its record
(weights, settings, pause, resume, promote, revert, undo) is refused with one line saying
it is being deleted, exit 2, and every table as it was. Deleting it again changes nothing.
"""

from __future__ import annotations

import pytest

from tests.badinput.harness import World, assert_refused, make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """`api` whose instance runs v1, then `service delete api` (its instance is being
    unassigned, so the record stays, marked)."""
    world = make_world("deleting", tmp_path_factory.mktemp("deleting"))
    store = world.wiring().store
    instance = store.get_instance(world.service, "i-1")
    store.set_assignment(
        world.service, "i-1", world.revision_id, expected_version=instance.assignment_version
    )
    store.set_current_revision(world.service, "i-1", world.revision_id)
    said = world.ok("service", "delete", world.service)
    assert "is being deleted" in said
    assert store.get_service(world.service).deleting
    return world


CHANGES = [
    ["weights", "api", "v1=0"],
    ["service", "update", "api", "--settle", "9"],
    ["service", "update", "api", "--max-in-flight", "50%"],
    ["rollout", "pause", "api"],
    ["rollout", "resume", "api"],
    ["rollout", "promote", "api"],
    ["rollout", "revert", "api"],
    ["rollout", "undo", "api"],
]


@pytest.mark.parametrize("args", CHANGES, ids=[" ".join(a) for a in CHANGES])
def test_a_change_to_a_service_being_deleted_is_refused(world: World, args: list[str]) -> None:
    refused = assert_refused(world, args, codes=(2,))
    assert "'api' is being deleted" in refused.stderr, refused.stderr
    assert "cannot be changed" in refused.stderr


def test_deleting_it_again_says_so_and_changes_nothing(world: World) -> None:
    before = world.snapshot()
    said = world.ok("service", "delete", "api")
    assert "already being deleted" in said
    assert world.snapshot() == before
