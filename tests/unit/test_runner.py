"""The deploy runner on memory adapters, real processes and a fake clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from flotilla.adapters.memory_load_balancer import MemoryLoadBalancer
from flotilla.engine import units
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.deploy.steps import STEPS
from flotilla.engine.errors import ConflictError, NotFoundError
from flotilla.engine.ports import TargetState
from flotilla.engine.records import Lease
from flotilla.machines import deploy as machine
from tests.support.cluster import BROKEN, Cluster


@pytest.fixture
def bare_cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, with_load_balancer=False)
    yield made
    made.shutdown()


def states(checkpoint: DeployCheckpoint) -> list[str]:
    return [t.state for t in checkpoint.history]


def running(cluster: Cluster, instance_id: str) -> list[str]:
    runtime = cluster.runtime(instance_id)
    owned = runtime.owned_units()
    return [s.name for s in runtime.status(owned) if s.active_state == "active"]


def test_a_first_deploy_walks_the_happy_path(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.SUCCEEDED
    assert states(done) == list(machine.HAPPY_PATH[:-1])
    assert all(t.ended_at is not None and t.error is None for t in done.history)
    assert running(cluster, "i-1") == [units.installed_name("app.service", v1.id)]
    assert cluster.store.get_instance("api", "i-1").current_revision == v1.id
    assert cluster.lb.registered() == {"i-1"}
    assert cluster.locks.holders("deploy/api") == []
    assert set(done.deadlines) >= {"overall", "drain", "health"}


def test_an_upgrade_replaces_the_old_units_with_the_new(cluster: Cluster) -> None:
    v1, v2 = cluster.revision("v1"), cluster.revision("v2", env={"COLOR": "blue"})
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    cluster.deploy("i-1")
    cluster.assign("i-1", v2)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert (done.from_revision, done.to_revision, done.outcome) == (v1.id, v2.id, Outcome.SUCCEEDED)
    assert running(cluster, "i-1") == [units.installed_name("app.service", v2.id)]
    assert cluster.runtime("i-1").owned_units() == [units.installed_name("app.service", v2.id)]
    drained = next(t for t in done.history if t.state == "draining")
    assert drained.ended_at is not None
    assert (drained.ended_at - drained.started_at).total_seconds() >= 30  # the LB's drain


def test_without_a_load_balancer_its_states_are_recorded_as_skipped(bare_cluster: Cluster) -> None:
    v1 = bare_cluster.revision("v1")
    bare_cluster.instance("i-1")
    bare_cluster.assign("i-1", v1)
    done = bare_cluster.store.get_deploy(bare_cluster.deploy("i-1"))
    assert done.outcome is Outcome.SUCCEEDED
    skipped = {t.state for t in done.history if t.skipped}
    assert skipped == {"deregistering", "draining", "registering"}


def test_a_unit_that_exits_at_once_rolls_back_to_the_previous_revision(cluster: Cluster) -> None:
    v1, bad = cluster.revision("v1"), cluster.revision("bad", unit=BROKEN)
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    cluster.deploy("i-1")
    cluster.assign("i-1", bad)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.ROLLED_BACK
    assert done.error is not None
    assert "exit" in done.error
    failed_step = next(t for t in done.history if t.error)
    assert failed_step.state == "starting"
    assert states(done)[-4:] == ["starting", "failed", "rolling_back", "unlocked"]
    assert running(cluster, "i-1") == [units.installed_name("app.service", v1.id)]
    assert cluster.store.get_instance("api", "i-1").current_revision == v1.id
    assert cluster.lb.registered() == {"i-1"}
    assert cluster.locks.holders("deploy/api") == []


def test_health_that_never_passes_fails_and_even_the_rollback_cannot_fix_it(
    cluster: Cluster,
) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.lb.never_healthy("i-1")
    cluster.assign("i-1", v1)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.FAILED
    assert done.error is not None
    assert "health check" in done.error
    assert done.rollback_error is not None
    assert cluster.locks.holders("deploy/api") == []


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even `except Exception` blocks."""


CRASH_POINTS = [
    (state, point) for state in machine.HAPPY_PATH[:-1] for point in ("before-step", "after-effect")
]


@pytest.mark.parametrize(("crash_state", "crash_point"), CRASH_POINTS)
def test_a_deploy_interrupted_anywhere_is_finished_by_the_next_runner(
    cluster: Cluster, crash_state: str, crash_point: str
) -> None:
    v1, v2 = cluster.revision("v1"), cluster.revision("v2")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    cluster.deploy("i-1")
    cluster.assign("i-1", v2)

    def crash(point: str, state: str) -> None:
        if (state, point) == (crash_state, crash_point):
            raise Crash

    with pytest.raises(Crash):
        cluster.deploy("i-1", fault=crash)
    cluster.clock.advance(5)
    instance = cluster.store.get_instance("api", "i-1")
    deploy_id = f"api/i-1.{instance.assignment_version}"
    runner = cluster.runner("i-1")
    if crash_state == machine.INITIAL_STATE:
        # `pending` is performed before the checkpoint is first written, in `locking`:
        # nothing was stored, and the next agent creates the deploy as the first one did.
        with pytest.raises(NotFoundError):
            cluster.store.get_deploy(deploy_id)
        deploy_id = runner.create(instance, cluster.service).id
    done = runner.run(deploy_id, cluster.service)
    assert done.outcome is Outcome.SUCCEEDED, done.error
    assert running(cluster, "i-1") == [units.installed_name("app.service", v2.id)]
    assert cluster.runtime("i-1").owned_units() == [units.installed_name("app.service", v2.id)]
    assert cluster.lb.registered() == {"i-1"}
    assert cluster.locks.holders("deploy/api") == []
    assert cluster.store.get_instance("api", "i-1").current_revision == v2.id
    resumed = [t for t in done.history if t.resumed]
    if crash_state != "pending":
        assert [t.state for t in resumed] == [crash_state]
        interrupted = [t for t in done.history if t.error and "interrupted" in t.error]
        assert [t.state for t in interrupted] == [crash_state]


def test_an_agent_that_keeps_dying_in_one_state_gives_up_and_rolls_back(cluster: Cluster) -> None:
    v1, v2 = cluster.revision("v1"), cluster.revision("v2")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    cluster.deploy("i-1")
    cluster.assign("i-1", v2)

    def crash_when_starting(point: str, state: str) -> None:
        if (state, point) == ("starting", "before-step"):
            raise Crash

    with pytest.raises(Crash):
        cluster.deploy("i-1", fault=crash_when_starting)
    deploy_id = f"api/i-1.{cluster.store.get_instance('api', 'i-1').assignment_version}"
    for _ in range(3):  # attempts 2, 3 die as well; the 4th gives up
        with pytest.raises(Crash):
            cluster.runner("i-1", crash_when_starting).run(deploy_id, cluster.service)
    done = cluster.runner("i-1").run(deploy_id, cluster.service)
    assert done.outcome is Outcome.ROLLED_BACK
    assert done.error is not None
    assert "giving up" in done.error
    assert running(cluster, "i-1") == [units.installed_name("app.service", v1.id)]


def test_a_runner_that_falls_behind_stops_without_writing(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    instance = cluster.store.get_instance("api", "i-1")
    first = cluster.runner("i-1")
    created = first.create(instance, cluster.service)
    overtaken: list[DeployCheckpoint] = []

    def let_another_runner_finish(point: str, state: str) -> None:
        if (state, point) == ("locking", "after-effect") and not overtaken:
            overtaken.append(cluster.runner("i-1").run(created.id, cluster.service))

    slow = cluster.runner("i-1", let_another_runner_finish)
    result = slow.run(created.id, cluster.service)
    assert overtaken[0].outcome is Outcome.SUCCEEDED
    stored = cluster.store.get_deploy(created.id)
    assert stored == overtaken[0]  # the slow runner wrote nothing after losing
    assert result.state == "locking"  # it stopped where it lost
    with pytest.raises(ConflictError):
        cluster.store.update_deploy(result)


def test_a_deploy_that_outlives_its_lease_keeps_its_slot(cluster: Cluster) -> None:
    cluster.lb = MemoryLoadBalancer(cluster.clock, drain_seconds=600, health_seconds=20)
    cluster.instance("i-1")
    v1 = cluster.revision("v1")
    cluster.assign("i-1", v1)
    intruders: list[Lease | None] = []
    real_state = cluster.lb.state

    def state_while_someone_else_tries(instance_id: str) -> TargetState:
        lease = timedelta(seconds=60)
        intruders.append(cluster.locks.acquire("deploy/api", "intruder", slots=1, lease=lease))
        return real_state(instance_id)

    cluster.lb.state = state_while_someone_else_tries  # type: ignore[method-assign]
    cluster.service = cluster.store.update_service(
        dataclasses.replace(cluster.service, drain_timeout_seconds=900)
    )
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.SUCCEEDED
    drain = next(t for t in done.history if t.state == "draining")
    assert drain.ended_at is not None
    assert (drain.ended_at - drain.started_at).total_seconds() >= 600  # five leases long
    assert intruders
    assert all(intruder is None for intruder in intruders)


def test_throttled_load_balancer_calls_are_retried(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    cluster.lb.fail_next(4)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.SUCCEEDED
    assert len(cluster.lb.calls) > 4


def test_the_step_table_covers_exactly_the_machines_step_states() -> None:
    assert set(STEPS) == set(machine.STEP_STATES)
    assert all(isinstance(state, machine.State) for state in STEPS)
