"""The agent-side probe of a service without a load balancer, in real deploys: memory AWS,
real unit processes, a fake clock, and a real HTTP server on loopback in a thread (its
answers scripted by request count, so nothing depends on timing).

The probe must pass for the health period without a break before `healthy` succeeds; one
that never passes by the health deadline fails the deploy, which rolls back; a kill in the
middle of probing resumes with the same stored deadline. What a probe saw reaches the
deploy's history as a status, never a body or a command's output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flotilla.adapters.health_probe import LocalHealthProbe
from flotilla.cli.agent_assembly import build_runner
from flotilla.engine import units
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.deploy.runner import RunnerSettings
from flotilla.engine.ports import ProbeResult, ProbeTarget
from flotilla.engine.records import HealthCheck, HealthCheckProtocol, Revision
from tests.support.cluster import Cluster
from tests.support.faults import Crash
from tests.support.probe_servers import http_server

PERIOD = 10  # seconds; probes are 1 s apart on the fake clock
BODY_SECRET = "s3cr3t-body-never-reported"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, with_load_balancer=False)
    yield made
    made.shutdown()


def check_on(cluster: Cluster, **settings: object) -> None:
    """Give the cluster's service a health check (or command) from now on."""
    cluster.service = cluster.store.update_service(
        dataclasses.replace(cluster.service, health_period_seconds=PERIOD, **settings)  # type: ignore[arg-type]
    )


def http_check(port: int) -> HealthCheck:
    return HealthCheck(HealthCheckProtocol.HTTP, port, "/health")


def upgraded(cluster: Cluster) -> tuple[Revision, Revision, DeployCheckpoint]:
    """v1 deployed before any check; then v2's deploy, with the check, run to its end."""
    v1, v2 = cluster.revision("v1"), cluster.revision("v2", env={"COLOR": "blue"})
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    return v1, v2, _deploy_v2(cluster, v2)


def _deploy_v2(cluster: Cluster, v2: Revision) -> DeployCheckpoint:
    cluster.assign("i-1", v2)
    return cluster.store.get_deploy(cluster.deploy("i-1"))


def running(cluster: Cluster) -> list[str]:
    runtime = cluster.runtime("i-1")
    return [s.name for s in runtime.status(runtime.owned_units()) if s.active_state == "active"]


def healthy_seconds(done: DeployCheckpoint) -> float:
    visit = next(t for t in done.history if t.state == "healthy")
    assert visit.ended_at is not None
    return (visit.ended_at - visit.started_at).total_seconds()


def test_a_probe_that_passes_for_the_period_lets_the_deploy_finish(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    with http_server([200]) as (port, script):
        check_on(cluster, health_check=http_check(port))
        cluster.assign("i-1", v1)
        done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.SUCCEEDED, done.error
    assert script.paths == ["/health"] * (PERIOD + 1)  # at 0, 1, ... 10 s
    assert healthy_seconds(done) >= PERIOD
    assert running(cluster) == [units.installed_name("app.service", v1.id)]


def test_one_failure_starts_the_period_again(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    with http_server([200] * 5 + [503] + [200]) as (port, script):
        check_on(cluster, health_check=http_check(port))
        cluster.assign("i-1", v1)
        done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.SUCCEEDED, done.error
    assert script.requests == 5 + 1 + PERIOD + 1
    assert healthy_seconds(done) >= 5 + 1 + PERIOD


def test_a_probe_that_never_passes_fails_the_deploy_which_rolls_back(cluster: Cluster) -> None:
    v1, v2 = cluster.revision("v1"), cluster.revision("v2", env={"COLOR": "blue"})
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    cluster.deploy("i-1")
    with http_server([503]) as (port, script):
        check_on(cluster, health_check=http_check(port))
        done = _deploy_v2(cluster, v2)
    assert done.outcome is Outcome.ROLLED_BACK
    assert done.error is not None
    assert f"health probe http://127.0.0.1:{port}/health did not pass" in done.error
    assert "last failure: HTTP 503" in done.error
    failed = [t for t in done.history if t.error]
    assert [t.state for t in failed] == ["healthy"]
    assert [t.state for t in done.history][-3:] == ["failed", "rolling_back", "unlocked"]
    # It probed until the health deadline stored in `starting`, not a fresh one.
    assert failed[0].ended_at is not None
    assert failed[0].ended_at >= done.deadlines["health"]
    assert script.requests > 100
    assert running(cluster) == [units.installed_name("app.service", v1.id)]
    assert cluster.store.get_instance("api", "i-1").current_revision == v1.id
    assert cluster.locks.holders("deploy/api") == []
    assert BODY_SECRET not in repr(done)


def test_a_failing_health_command_reports_its_exit_status_never_its_output(
    cluster: Cluster, spans: InMemorySpanExporter
) -> None:
    v1, v2 = cluster.revision("v1"), cluster.revision("v2", env={"COLOR": "blue"})
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    cluster.deploy("i-1")
    check_on(cluster, health_command="echo s3cr3t-out; echo s3cr3t-err >&2; exit 4")
    done = _deploy_v2(cluster, v2)
    assert done.outcome is Outcome.ROLLED_BACK
    assert done.error is not None
    assert "health probe the health command did not pass" in done.error
    assert "last failure: exit status 4" in done.error
    assert "s3cr3t" not in repr(done)
    assert running(cluster) == [units.installed_name("app.service", v1.id)]
    # The reason is on the `healthy` span; the probe's own span names what it probed.
    finished = spans.get_finished_spans()
    (healthy,) = [s for s in finished if s.name == "deploy.healthy"][-1:]
    assert "last failure: exit status 4" in str(healthy.status.description)
    (probe,) = [s for s in finished if s.name == "probe"]
    assert (probe.attributes or {})["flotilla.probe"] == "the health command"
    every = repr([(s.attributes, s.status.description, s.events) for s in finished])
    assert "s3cr3t" not in every


def test_a_passing_health_command_lets_the_deploy_finish(cluster: Cluster) -> None:
    check_on(cluster, health_command="test 2 -gt 1")
    _v1, v2, done = upgraded(cluster)
    assert done.outcome is Outcome.SUCCEEDED, done.error
    assert running(cluster) == [units.installed_name("app.service", v2.id)]


class DiesWhileProbing:
    """The real probe, and a kill (`Crash`, like SIGKILL) at its `after`-th probe."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.probes = 0
        self.real = LocalHealthProbe()

    def check(self, target: ProbeTarget, *, timeout: timedelta) -> ProbeResult:
        self.probes += 1
        if self.probes == self.after:
            raise Crash("killed while probing")
        return self.real.check(target, timeout=timeout)


def test_a_kill_while_probing_resumes_with_the_same_health_deadline(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    with http_server([200]) as (port, script):
        check_on(cluster, health_check=http_check(port))
        cluster.assign("i-1", v1)
        instance = cluster.store.get_instance("api", "i-1")
        dying = build_runner(
            dataclasses.replace(cluster.adapters("i-1"), probe=DiesWhileProbing(after=4)),
            settings=RunnerSettings(),
        )
        created = dying.create(instance, cluster.service)
        with pytest.raises(Crash):
            dying.run(created.id, cluster.service, known=created)
        interrupted = cluster.store.get_deploy(created.id)
        assert interrupted.state == "healthy"
        cluster.clock.advance(5)  # systemd restarts the agent
        done = cluster.runner("i-1").run(created.id, cluster.service)
    assert done.outcome is Outcome.SUCCEEDED, done.error
    assert done.deadlines["health"] == interrupted.deadlines["health"]
    assert [t.state for t in done.history if t.resumed] == ["healthy"]
    # 3 probes before the kill, then a whole period again: the streak is not stored.
    assert script.requests == 3 + PERIOD + 1
    assert running(cluster) == [units.installed_name("app.service", v1.id)]
    assert cluster.locks.holders("deploy/api") == []
