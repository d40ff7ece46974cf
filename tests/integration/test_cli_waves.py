"""Rollouts in waves across three regions (issue 18), on one moto server with a proxy
per region (`tests.integration.regions_world`)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator

import pytest

from flotilla.engine.records import FailureAction, RolloutStatus, WaveStatus
from flotilla.engine.revisions import build_revision
from tests.integration.regions_world import (
    PATIENCE,
    REGIONS,
    WAVES,
    A,
    B,
    C,
    World,
    regions_world,
    wait_for,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with regions_world("waves", tmp_path_factory.mktemp("waves")) as made:
        yield made


def test_three_regions_roll_out_one_after_another(world: World) -> None:
    world.service("web", "v1")
    result = world.run("weights", "web", "v1=100", "--waves", WAVES, "--interval", "0.3")
    assert result.returncode == 0, result.stderr
    assert "waves of web complete" in result.stdout
    plan = world.plan("web")
    assert plan.status is WaveStatus.COMPLETE
    assert [wave.region for wave in plan.waves] == list(REGIONS)
    for earlier, later in zip(plan.waves, plan.waves[1:], strict=False):
        assert earlier.completed_at is not None
        assert later.applied_at is not None
        assert earlier.completed_at <= later.applied_at  # the next waited for the one before
    for region in REGIONS:
        assert world.weights(region, "web") == {"v1": 100}
        assert world.running(region, "web") == {"v1"}
    # Each region's line says when it was set and when it completed, in order.
    said = [line.split(":")[0] for line in result.stdout.splitlines() if "weights set" in line]
    assert said == list(REGIONS)


def v2_failing_in(world: World, name: str, region: str) -> subprocess.CompletedProcess[str]:
    """`name` rolled out on v1 in waves, then v2 in waves, whose deploys fail in `region`."""
    world.service(name, "v1", "v2")
    world.ok("weights", name, "v1=100", "--waves", WAVES, "--interval", "0.3")
    world.fleet.failing.add((region, name, "v2"))
    result = world.run("weights", name, "v2=100", "v1=0", "--waves", WAVES, "--interval", "0.3")
    assert result.returncode == 1, result.stderr
    return result


def test_a_revision_failing_in_the_first_region_never_reaches_the_second(world: World) -> None:
    result = v2_failing_in(world, "sad", A)
    assert "the waves of sad stopped: eu-west-1:" in result.stderr
    plan = world.plan("sad")
    assert plan.status is WaveStatus.STOPPED
    assert plan.reason is not None
    assert plan.reason.startswith(f"{A}: ")
    assert [wave.applied for wave in plan.waves] == [True, False, False]
    for region in (B, C):
        assert world.weights(region, "sad") == {"v1": 100}
        assert world.running(region, "sad") == {"v1"}
        store = world.wirings[region].store
        v2 = next(r.id for r in store.list_revisions("sad") if r.label == "v2")
        assert all(not entry.weights.get(v2) for entry in store.get_service("sad").history)
        assert all(deploy.to_revision != v2 for deploy in store.list_deploys("sad"))
    # The first region's own scheduler reverted its rollout (its failure action).
    wait_for("the first region back on v1", lambda: world.running(A, "sad") == {"v1"})


def test_a_failure_in_a_later_region_sets_the_regions_done_back(world: World) -> None:
    result = v2_failing_in(world, "later", B)
    plan = world.plan("later")
    assert plan.failure_action is FailureAction.REVERT
    assert plan.reason is not None
    assert plan.reason.startswith(f"{B}: ")
    assert [(w.applied, w.undone) for w in plan.waves] == [
        (True, True),
        (True, False),
        (False, False),
    ]
    assert world.weights(A, "later") == {"v1": 100, "v2": 0}
    wait_for("the first region back on v1", lambda: world.running(A, "later") == {"v1"})
    assert world.weights(C, "later") == {"v1": 100}
    assert "eu-west-1: set back to its weights from before the waves" in result.stdout


def test_a_region_going_dark_mid_wave_holds_the_waves_with_the_reason(world: World) -> None:
    world.service("dark", "v1")
    world.fleet.held.add(A)  # A's rollout waits until B has gone dark
    command = world.popen("weights", "dark", "v1=100", "--waves", WAVES, "--interval", "0.3")
    dark = False
    try:
        wait_for("the first wave applied", lambda: _applied(world, "dark", 0))
        world.proxies[B].down()
        dark = True
        world.fleet.held.discard(A)
        wait_for("the waves held", lambda: world.plan("dark").status is WaveStatus.HELD)
        plan = world.plan("dark")
        assert plan.reason is not None
        assert plan.reason.startswith(f"region {B} is unreachable")
        assert plan.waves[0].completed_at is not None
        assert not plan.waves[1].applied
        assert world.weights(B, "dark") == {}  # nothing reached the dark region
        assert command.poll() is None  # still waiting for it
        world.proxies[B].up()
        dark = False
        stdout, stderr = command.communicate(timeout=PATIENCE)
    finally:
        if command.poll() is None:
            command.kill()
        if dark:
            world.proxies[B].up()
    assert command.returncode == 0, stderr
    assert f"the waves are held: region {B} is unreachable" in stdout
    assert world.plan("dark").status is WaveStatus.COMPLETE
    for region in REGIONS:
        assert world.running(region, "dark") == {"v1"}


def test_a_command_killed_mid_wave_is_resumed_from_the_stored_progress(world: World) -> None:
    world.service("killed", "v1")
    world.fleet.held.add(B)  # the second wave cannot complete while the command is killed
    command = world.popen("weights", "killed", "v1=100", "--waves", WAVES, "--interval", "0.3")
    try:
        wait_for("the second wave applied", lambda: _applied(world, "killed", 1))
    finally:
        command.send_signal(signal.SIGKILL)
        command.communicate(timeout=30)
    before = world.plan("killed")
    assert before.status is WaveStatus.ROLLING
    assert before.current == 1
    a_version = world.wirings[A].store.get_service("killed").version
    world.fleet.held.discard(B)
    result = world.run(
        "rollout", "waves", "killed", "--interval", "0.3"
    )  # entered through us-east-1
    assert result.returncode == 0, result.stderr
    after = world.plan("killed")
    assert after.status is WaveStatus.COMPLETE
    assert after.number == before.number
    assert after.waves[0] == before.waves[0]  # the first wave was not done again
    assert after.waves[1].applied_at == before.waves[1].applied_at
    assert world.wirings[A].store.get_service("killed").weights == before.waves[0].weights
    assert world.wirings[A].store.get_service("killed").version >= a_version
    for region in REGIONS:
        assert world.running(region, "killed") == {"v1"}


def test_an_unreachable_region_refuses_the_waves_and_changes_nothing(world: World) -> None:
    world.service("staged", "v1")
    world.proxies[C].down()
    try:
        with world.unchanged():
            result = world.run("weights", "staged", "v1=100", "--waves", WAVES, "--interval", "0.3")
    finally:
        world.proxies[C].up()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: region {C} is unreachable"), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("waves", "message"),
    [
        (f"{A},{B}", "must name each region of bad once"),
        (f"{A},{B},{C},{A}", "more than once"),
        (A, "two regions or more"),
        (f"{A},{B},us-west-9", "must name each region of bad once"),
        (f"{A},{B},not a region", "invalid AWS region"),
    ],
)
def test_bad_waves_are_refused_in_one_line_and_change_nothing(
    world: World, waves: str, message: str
) -> None:
    if "bad" not in world.fleet.services:
        world.service("bad", "v1")
    with world.unchanged():
        result = world.run("weights", "bad", "v1=100", "--waves", waves)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_a_label_missing_in_one_region_is_refused_before_any_region_changes(world: World) -> None:
    world.service("partial", "v1")
    directory = world.tmp / "partial-only-a"
    directory.mkdir()
    (directory / "web.service").write_text("[Service]\nExecStart=/usr/bin/web only-a\n")
    a_only = world.wirings[A]  # the revision goes to A alone, as if added there alone
    unit = {"web.service": (directory / "web.service").read_text()}
    a_only.store.put_revision(
        build_revision("partial", "only-a", unit, {}, a_only.secret_box(), a_only.clock.now())
    )
    with world.unchanged():
        result = world.run("weights", "partial", "only-a=100", "--waves", WAVES)
    assert result.returncode != 0
    assert f"error: {B}: " in result.stderr
    assert "only-a" in result.stderr


def _applied(world: World, name: str, index: int) -> bool:
    try:
        return world.plan(name).waves[index].applied
    except AssertionError:
        return False


def test_weights_without_waves_are_set_in_every_region_at_once(world: World) -> None:
    world.service("every", "v1", "v2")
    result = world.run("weights", "every", "v1=100")
    assert result.returncode == 0, result.stderr
    for region in REGIONS:
        assert f"{region}: weights v1=100" in result.stdout
        assert world.weights(region, "every") == {"v1": 100}
    for region in REGIONS:  # the fleet writes nothing more once every rollout completed
        wait_for(f"{region} complete", lambda region=region: _complete(world, region, "every"))
    world.proxies[C].down()  # not the entry region (us-east-1): that one answers
    try:
        with world.unchanged():  # not even the regions that answered change
            refused = world.run("weights", "every", "v2=100", "v1=0")
    finally:
        world.proxies[C].up()
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: region {C} is unreachable")


def test_an_operator_stops_waves_under_way_and_every_region_keeps_what_it_runs(
    world: World,
) -> None:
    world.service("halt", "v1")
    world.fleet.held.add(A)  # the first wave cannot complete
    command = world.popen("weights", "halt", "v1=100", "--waves", WAVES, "--interval", "0.3")
    try:
        wait_for("the first wave applied", lambda: _applied(world, "halt", 0))
        with world.unchanged():
            plain = world.run("weights", "halt", "v1=50")
        assert plain.returncode == 2, plain.stderr
        assert "a rollout in waves of halt is under way" in plain.stderr
        stopped = world.run("rollout", "waves", "halt", "--stop", "--reason", "bad change")
        assert stopped.returncode == 0, stopped.stderr
        _, stderr = command.communicate(timeout=PATIENCE)
    finally:
        world.fleet.held.discard(A)
        if command.poll() is None:
            command.kill()
    assert command.returncode == 1
    assert "stopped by" in stderr
    assert "bad change" in stderr
    plan = world.plan("halt")
    assert plan.status is WaveStatus.STOPPED
    assert [wave.undone for wave in plan.waves] == [False, False, False]
    assert world.weights(A, "halt") == {"v1": 100}  # kept, not set back
    assert world.weights(B, "halt") == {}
    again = world.run("rollout", "waves", "halt", "--stop")
    assert again.returncode == 1
    assert "no rollout in waves under way" in again.stderr


def _complete(world: World, region: str, name: str) -> bool:
    service = world.wirings[region].store.get_service(name)
    in_sync = service.rollout_state.weights == service.weights
    return in_sync and service.rollout_state.status is RolloutStatus.COMPLETE


def test_a_region_refusing_its_wave_stops_the_waves_and_sets_back_those_done(
    world: World,
) -> None:
    """Its record deleted there mid-wave: the waves stop with the reason; the regions done
    ran nothing before, so they are set back to running nothing."""
    world.service("vanish", "v1")
    world.fleet.held.add(B)  # the second wave waits until C's record is gone
    command = world.popen("weights", "vanish", "v1=100", "--waves", WAVES, "--interval", "0.3")
    try:
        wait_for("the second wave applied", lambda: _applied(world, "vanish", 1))
        store = world.wirings[C].store
        store.delete_service("vanish", expected_version=store.get_service("vanish").version)
        world.fleet.held.discard(B)
        _, stderr = command.communicate(timeout=PATIENCE)
    finally:
        world.fleet.held.discard(B)
        if command.poll() is None:
            command.kill()
    assert command.returncode == 1, stderr
    plan = world.plan("vanish")
    assert plan.status is WaveStatus.STOPPED
    assert plan.reason is not None
    assert plan.reason.startswith(f"{C}: service 'vanish' does not exist")
    assert [(w.applied, w.undone) for w in plan.waves] == [
        (True, True),
        (True, True),
        (False, False),
    ]
    for region in (A, B):
        assert world.weights(region, "vanish") == {"v1": 0}
        wait_for(f"{region} runs nothing", lambda r=region: world.running(r, "vanish") == {None})
