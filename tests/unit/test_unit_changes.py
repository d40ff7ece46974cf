"""Issue 15 on the deploy runner (real processes, memory store and load balancer, fake
clock): only changed units restart, the load-balancer states are skipped (with their
reason) when no unit that serves traffic changes, an unassignment stops and removes
everything, and rollbacks restore exactly the previous set."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flotilla.adapters.process_runtime import ProcessRuntime
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.errors import ConfigurationError
from flotilla.engine.records import Revision
from flotilla.engine.revisions import build_revision
from flotilla.engine.updates import set_weights
from flotilla.machines import deploy as machine
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from flotilla.scheduler.phases import Phase, phase_of, running_deploys, unsettled
from tests.support.cluster import BROKEN, SLEEPER, Cluster

QUIET = "[Unit]\nX-Flotilla-Serves=no\n" + SLEEPER


def revision(
    cluster: Cluster,
    label: str,
    units: Mapping[str, str],
    env: Mapping[str, Mapping[str, str]] | None = None,
) -> Revision:
    built = build_revision(
        "api",
        label,
        dict(units),
        {u: dict(v) for u, v in (env or {}).items()},
        cluster.secrets,
        cluster.clock.now(),
    )
    return cluster.store.put_revision(built)


def deploy(cluster: Cluster, target: Revision | None) -> DeployCheckpoint:
    current = cluster.store.get_instance("api", "i-1")
    cluster.store.set_assignment(
        "api",
        "i-1",
        None if target is None else target.id,
        expected_version=current.assignment_version,
    )
    return cluster.store.get_deploy(cluster.deploy("i-1"))


def pids(cluster: Cluster) -> dict[str, int | None]:
    """Each running unit (by its name in the revision) → its main process."""
    runtime = cluster.runtime("i-1")
    found = {}
    for status in runtime.status(runtime.owned_units()):
        if status.active_state == "active":
            unit = status.name.removeprefix("flotilla-").rsplit("-", 1)[0] + ".service"
            found[unit] = status.main_pid
    return found


def skipped(checkpoint: DeployCheckpoint) -> dict[str, str | None]:
    return {t.state: t.skip_reason for t in checkpoint.history if t.skipped}


THREE = {"web.service": SLEEPER, "worker.service": SLEEPER, "cron.service": SLEEPER}


@pytest.fixture
def three(cluster: Cluster) -> Revision:
    v1 = revision(cluster, "v1", THREE, {"web.service": {"TOKEN": "one"}})
    cluster.instance("i-1")
    assert deploy(cluster, v1).outcome is Outcome.SUCCEEDED
    return v1


def test_a_change_to_one_of_three_units_restarts_only_that_one(
    cluster: Cluster, three: Revision
) -> None:
    before = pids(cluster)
    assert set(before) == set(THREE)
    assert None not in before.values()
    changed = {**THREE, "worker.service": SLEEPER.replace("600", "601")}
    v2 = revision(cluster, "v2", changed, {"web.service": {"TOKEN": "one"}})

    done = deploy(cluster, v2)

    assert done.outcome is Outcome.SUCCEEDED
    after = pids(cluster)
    assert after["web.service"] == before["web.service"]
    assert after["cron.service"] == before["cron.service"]
    assert after["worker.service"] != before["worker.service"]
    assert done.units is not None
    assert (done.units.changed, done.units.removed) == (("worker.service",), ())
    assert done.units.traffic_kept is False  # the worker serves traffic: drained as ever
    assert skipped(done) == {}
    assert cluster.runtime("i-1").owned_units() == sorted(done.units.after.values())
    assert cluster.store.get_instance("api", "i-1").current_revision == v2.id


def test_a_changed_environment_restarts_its_unit_and_nothing_secret_is_kept(
    cluster: Cluster, three: Revision
) -> None:
    before = pids(cluster)
    v2 = revision(cluster, "v2", THREE, {"web.service": {"TOKEN": "two"}})
    done = deploy(cluster, v2)
    after = pids(cluster)
    assert done.units is not None
    assert done.units.changed == ("web.service",)
    assert after["web.service"] != before["web.service"]
    assert [after[u] for u in ("worker.service", "cron.service")] == [
        before[u] for u in ("worker.service", "cron.service")
    ]
    stored = repr(cluster.store.get_deploy(done.id))
    assert "two" not in stored.replace("two_", "")
    assert "TOKEN" not in stored


def test_when_only_units_that_serve_no_traffic_change_the_instance_stays_in_service(
    cluster: Cluster,
) -> None:
    v1 = revision(cluster, "v1", {"web.service": SLEEPER, "report.service": QUIET})
    cluster.instance("i-1")
    deploy(cluster, v1)
    before = pids(cluster)
    v2 = revision(
        cluster, "v2", {"web.service": SLEEPER, "report.service": QUIET.replace("600", "602")}
    )
    deregistered: list[str] = []
    cluster.lb.deregister = deregistered.append  # type: ignore[method-assign]

    done = deploy(cluster, v2)

    assert done.outcome is Outcome.SUCCEEDED
    reason = "no unit that serves traffic changes: the instance stays in the load balancer"
    assert skipped(done) == dict.fromkeys(machine.LOAD_BALANCER_STATES, reason)
    assert deregistered == []
    assert cluster.lb.registered() == {"i-1"}
    after = pids(cluster)
    assert after["web.service"] == before["web.service"]
    assert after["report.service"] != before["report.service"]


def test_a_failed_change_restores_exactly_the_previous_set(
    cluster: Cluster, three: Revision
) -> None:
    before = pids(cluster)
    previous = cluster.runtime("i-1").owned_units()
    bad = revision(
        cluster, "bad", {**THREE, "cron.service": BROKEN}, {"web.service": {"TOKEN": "one"}}
    )

    done = deploy(cluster, bad)

    assert done.outcome is Outcome.ROLLED_BACK
    assert done.failed_in == "starting"
    assert cluster.runtime("i-1").owned_units() == previous
    after = pids(cluster)
    assert after["web.service"] == before["web.service"]
    assert after["worker.service"] == before["worker.service"]
    assert after["cron.service"] is not None
    assert after["cron.service"] != before["cron.service"]
    assert cluster.store.get_instance("api", "i-1").current_revision == three.id
    assert cluster.lb.registered() == {"i-1"}


def test_an_unassignment_deregisters_stops_and_removes_every_unit(
    cluster: Cluster, three: Revision
) -> None:
    runtime = cluster.runtime("i-1")
    files = list(runtime.files.unit_dir.iterdir()) + list(runtime.files.environment_dir.iterdir())
    assert any(f.name.endswith(".env") for f in files)

    done = deploy(cluster, None)

    assert done.outcome is Outcome.SUCCEEDED
    assert done.id == f"api/i-1.{cluster.store.get_instance('api', 'i-1').assignment_version}"
    assert (done.from_revision, done.to_revision) == (three.id, None)
    assert [t.state for t in done.history] == list(machine.HAPPY_PATH[:-1])
    assert skipped(done) == {
        "starting": "assigned no revision: nothing to start",
        "registering": "assigned no revision: the instance stays out of the load balancer",
    }
    assert runtime.owned_units() == []
    assert not [f for f in runtime.files.unit_dir.iterdir() if f.name.startswith("flotilla-")]
    assert not [f for f in runtime.files.environment_dir.iterdir() if f.name.endswith(".env")]
    assert cluster.store.get_instance("api", "i-1").current_revision is None
    assert cluster.lb.registered() == set()
    assert cluster.locks.holders("deploy/api") == []


def test_a_failed_unassignment_restores_the_previous_units(
    cluster: Cluster, three: Revision, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = cluster.runtime("i-1").owned_units()
    real_remove = ProcessRuntime.remove
    calls = []

    def remove_fails_once(self: ProcessRuntime, names: list[str]) -> None:
        calls.append(names)
        if len(calls) == 1:
            raise ConfigurationError("cannot remove the unit files: read-only file system")
        real_remove(self, names)

    monkeypatch.setattr(ProcessRuntime, "remove", remove_fails_once)

    done = deploy(cluster, None)

    assert done.outcome is Outcome.ROLLED_BACK
    assert done.failed_in == "stopping"
    assert cluster.runtime("i-1").owned_units() == previous
    assert set(pids(cluster)) == set(THREE)
    assert cluster.store.get_instance("api", "i-1").current_revision == three.id
    assert cluster.lb.registered() == {"i-1"}


def test_an_instance_assigned_none_that_runs_nothing_has_no_deploy(cluster: Cluster) -> None:
    cluster.instance("i-1")
    instance = cluster.store.get_instance("api", "i-1")
    runner = cluster.runner("i-1")
    with pytest.raises(Exception, match="runs nothing"):
        runner.create(instance, cluster.service)


def test_the_scheduler_reads_an_unassignment_in_flight_then_settled(
    cluster: Cluster, three: Revision
) -> None:
    """Nothing in scheduler/ changed for it: an instance assigned none counts as in flight
    while its unassignment runs, and settled (never 'unsettled' forever) once it ends."""
    current = cluster.store.get_instance("api", "i-1")
    cluster.store.set_assignment("api", "i-1", None, expected_version=current.assignment_version)
    instance = cluster.store.get_instance("api", "i-1")
    runner = cluster.runner("i-1")
    created = runner.create(instance, cluster.service)
    deploys = {created.id: created}
    assert phase_of(instance, deploys, running_deploys(deploys.values())) is Phase.IN_FLIGHT

    done = runner.run(created.id, cluster.service, known=created)
    instance = cluster.store.get_instance("api", "i-1")
    deploys = {done.id: done}
    assert (instance.assigned_revision, instance.current_revision) == (None, None)
    assert not unsettled(instance)
    assert phase_of(instance, deploys, running_deploys(deploys.values())) is Phase.SETTLED


def test_weights_set_to_0_through_the_scheduler_remove_every_unit(cluster: Cluster) -> None:
    """The scheduler's own pass turns weights 0 into an assignment of none; the agent's
    runner then unassigns the instance."""
    v1 = revision(cluster, "v1", THREE)
    cluster.instance("i-1")
    passes = SchedulerPass(
        cluster.store, cluster.clock, PassSettings(instance_ttl=timedelta(hours=1)), guard=lambda: 1
    )
    set_weights(cluster.store, "api", {v1.id: 100})
    passes.run()
    assert cluster.store.get_instance("api", "i-1").assigned_revision == v1.id
    cluster.deploy("i-1")
    assert set(pids(cluster)) == set(THREE)

    set_weights(cluster.store, "api", {v1.id: 0})
    passes.run()
    instance = cluster.store.get_instance("api", "i-1")
    assert (instance.assigned_revision, instance.current_revision) == (None, v1.id)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))

    assert (done.to_revision, done.outcome) == (None, Outcome.SUCCEEDED)
    assert cluster.runtime("i-1").owned_units() == []
    assert cluster.lb.registered() == set()
    cluster.clock.advance(5)
    passes.run()  # nothing left to do: the instance runs what it is assigned, nothing
    assert cluster.store.get_instance("api", "i-1").assigned_revision is None


def test_skips_and_the_unit_plan_are_on_the_spans_without_a_secret(
    cluster: Cluster, three: Revision, spans: InMemorySpanExporter
) -> None:
    v2 = revision(cluster, "v2", THREE, {"web.service": {"TOKEN": "s3cr3t-two"}})
    deploy(cluster, v2)
    deploy(cluster, None)
    by_name = {}
    for span in spans.get_finished_spans():
        by_name.setdefault(span.name, []).append(dict(span.attributes or {}))
    (planned, unassigning) = by_name["deploy.locking"][-2:]
    assert planned["flotilla.units_changed"] == "web.service"
    assert planned["flotilla.traffic_kept"] is False
    assert unassigning["flotilla.units_removed"] == "cron.service,web.service,worker.service"
    (starting,) = [a for a in by_name["deploy.starting"] if a.get("flotilla.skipped")]
    assert starting["flotilla.skip_reason"] == "assigned no revision: nothing to start"
    assert starting["flotilla.to_revision"] == ""
    every = repr([span.attributes for span in spans.get_finished_spans()])
    assert "s3cr3t" not in every
    assert "s3cr3t" not in repr(cluster.store.list_instance_deploys("api", "i-1"))


def test_a_deploy_opens_each_environment_once(
    cluster: Cluster, three: Revision, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each opening is a KMS Decrypt: the plan and `starting` share one per revision."""
    opened: list[str] = []
    real_open = cluster.secrets.open

    def counting(service: str, sealed: Any, binding: Any = None) -> Any:
        opened.append(binding.label if binding is not None else "?")
        return real_open(service, sealed, binding)

    monkeypatch.setattr(cluster.secrets, "open", counting)
    v2 = revision(cluster, "v2", THREE, {"web.service": {"TOKEN": "two"}})
    assert deploy(cluster, v2).outcome is Outcome.SUCCEEDED
    assert sorted(opened) == ["v1", "v2"]
