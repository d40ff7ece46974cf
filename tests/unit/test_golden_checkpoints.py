"""Golden replay: checkpoints as earlier versions wrote them are resumed by this runner.

tests/golden/checkpoints/<folder>/ holds stored deploy items, one per scenario and state
(tests/golden/scenarios.py says how they were made; `python -m tests.golden.record`
records the current version's). For each, the same world is rebuilt with the current
code up to that state, the stored checkpoint is replaced by the golden one, and the
current runner must finish it the way the scenario ends: the right outcome, the right
units running, the instance back in service, no slot left held. A machine version that
cannot follow a released checkpoint fails here, not on a fleet mid-upgrade.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from flotilla.adapters import items
from flotilla.engine import units
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.container_images import image_of
from flotilla.engine.errors import NotFoundError
from flotilla.machines import deploy as machine
from tests.golden.scenarios import GOLDEN, INSTANCE, SCENARIOS, Scenario, fixture_path, load
from tests.support.cluster import Cluster

FOLDERS = sorted(path.name for path in GOLDEN.iterdir() if path.is_dir())
CASES = [
    (folder, scenario, state)
    for folder in FOLDERS
    for scenario in SCENARIOS
    if scenario.recorded_in(folder)
    for state in scenario.crash_states
    # Versions that create deploys in `locking` store no `pending` checkpoint.
    if fixture_path(folder, scenario, state).is_file()
]


def test_every_step_state_has_a_golden_checkpoint_of_this_version() -> None:
    folder = f"machine-v{machine.MACHINE_VERSION}"
    recorded = {
        state
        for scenario in SCENARIOS
        for state in scenario.crash_states
        if scenario.recorded_in(folder) and fixture_path(folder, scenario, state).is_file()
    }
    # `pending` too, although this version creates deploys in `locking`: earlier ones
    # stored it, and a machine version that keeps the state must still resume it.
    recorded |= {machine.INITIAL_STATE} & _recorded_anywhere()
    missing = set(machine.STEP_STATES) - recorded
    assert not missing, f"record them: .venv/bin/python -m tests.golden.record ({missing})"


def _recorded_anywhere() -> set[str]:
    return {
        state
        for folder in FOLDERS
        for scenario in SCENARIOS
        for state in scenario.crash_states
        if fixture_path(folder, scenario, state).is_file()
    }


def test_the_folders_hold_exactly_the_scenarios_files() -> None:
    for folder in FOLDERS:
        expected = {
            fixture_path(folder, scenario, state).name
            for scenario in SCENARIOS
            if scenario.recorded_in(folder)
            for state in scenario.crash_states
        }
        found = {path.name for path in (GOLDEN / folder).glob("*.json")}
        assert found <= expected, folder
        # Versions that create deploys in `locking` store no `pending` checkpoint.
        assert all(name.endswith("-pending.json") for name in expected - found), folder


@pytest.mark.parametrize(
    ("folder", "scenario", "state"),
    CASES,
    ids=[f"{folder}/{scenario.name}-{state}" for folder, scenario, state in CASES],
)
def test_a_golden_checkpoint_is_resumed_to_its_end(
    tmp_path: Path, folder: str, scenario: Scenario, state: str
) -> None:
    golden = items.deploy_from_item(rekeyed(load(fixture_path(folder, scenario, state))))
    assert golden.state == state
    cluster = scenario.world(tmp_path)
    try:
        deploy_id = scenario.stop_in(cluster, state)
        assert golden.id == deploy_id, "the scenario no longer builds the recorded deploy"
        try:
            written = cluster.store.get_deploy(deploy_id)
        except NotFoundError:
            # This version stores no `pending` checkpoint (it creates deploys in `locking`);
            # an earlier one did, and its agents may have left one behind.
            assert state == machine.INITIAL_STATE
            cluster.store.create_deploy(golden)
        else:
            cluster.store.update_deploy(dataclasses.replace(golden, version=written.version))
            if golden.units is None:
                _as_recorded(cluster, golden, written)

        cluster.clock.advance(5)
        done = cluster.runner(INSTANCE).run(deploy_id, cluster.service)

        assert done.outcome is scenario.outcome, done.error
        if state != machine.INITIAL_STATE:
            assert [t.state for t in done.history if t.resumed] == [state]
        succeeded = scenario.outcome is Outcome.SUCCEEDED
        ends_on = golden.to_revision if succeeded else golden.from_revision
        runtime = cluster.runtime(INSTANCE)
        if done.units is not None:  # the units it ran before, or those it deployed
            expected = sorted((done.units.after if succeeded else done.units.before).values())
        else:
            expected = [] if ends_on is None else [units.installed_name("app.service", ends_on)]
        assert runtime.owned_units() == expected
        if scenario.containers:  # each runs the digest the checkpoint recorded for it
            assert done.images is not None
            for name in expected:
                assert image_of(runtime.files.unit_path(name).read_text()) == done.images[name]
                assert done.images[name] == (golden.images or done.images)[name]
        if scenario.outcome is not Outcome.FAILED:
            assert cluster.store.get_instance("api", INSTANCE).current_revision == ends_on
            if scenario.with_load_balancer:
                in_service = {INSTANCE} if ends_on is not None else set()
                assert cluster.lb.registered() == in_service
        assert cluster.locks.holders("deploy/api") == []
        if golden.failed_in is not None:
            assert done.failed_in == golden.failed_in
    finally:
        cluster.shutdown()


def rekeyed(item: dict[str, Any]) -> dict[str, Any]:
    """The item under the key this version gives its deploy (`<service>/<instance>.<n>`,
    indexed under `<service>/<instance>`). Versions before keys carried the service stored
    `<instance>.<n>`: the replay is of the machine and the checkpoint's fields, which must
    still be followed; the old keys themselves are no longer resumed by agents (their
    grants reach only keys of their service: tests/security/test_scoped_keys.py)."""
    if "/" in item["id"]:
        return item
    service = item["service"]
    return item | {
        "id": f"{service}/{item['id']}",
        "instance_id": f"{service}/{item['instance_id']}",
    }


def _performed(checkpoint: DeployCheckpoint, state: str) -> bool:
    return any(t.state == state and t.ended_at and not t.skipped for t in checkpoint.history)


def _as_recorded(cluster: Cluster, golden: DeployCheckpoint, written: DeployCheckpoint) -> None:
    """The load balancer as the recorded version left it. Without a unit plan (version 1)
    a deploy replaced every unit and left the load balancer; the current code keeps an
    unchanged revision in service, so the world it built skipped those steps."""
    if _performed(golden, "deregistering") and not _performed(written, "deregistering"):
        cluster.lb.deregister(INSTANCE)
    if _performed(golden, "registering") and not _performed(written, "registering"):
        cluster.lb.register(INSTANCE)


def test_a_checkpoint_written_before_failed_in_was_stored_reads_it_from_its_history() -> None:
    for scenario in SCENARIOS:
        if not scenario.recorded_in("machine-v1"):
            continue
        for state in scenario.crash_states:
            old = load(fixture_path("machine-v1-before-failed-in", scenario, state))
            new = load(fixture_path("machine-v1", scenario, state))
            assert "failed_in" not in old
            assert items.deploy_from_item(old).failed_in == new["failed_in"]
