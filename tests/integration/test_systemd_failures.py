"""Deploys that systemd refuses: a unit file it rejects, and a unit that exits right after
starting. Each ends `rolled_back` with systemd's own reason in the history, and the
previous revision runs again on the real systemd user manager."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.adapters.systemd import SystemdRuntime
from flotilla.engine import units
from flotilla.engine.checkpoint import Outcome
from flotilla.engine.revisions import build_revision
from tests.support.cluster import SLEEPER, Cluster
from tests.support.systemd_manager import PrivateSystemdManager

pytestmark = pytest.mark.systemd

REJECTED = "[Service]\nType=simple\nRestart=no\n"  # no ExecStart=: systemd refuses to load it
EXITS_AT_ONCE = "[Service]\nType=simple\nExecStart=/bin/sh -c 'exit 3'\n"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with PrivateSystemdManager() as manager:
        made = Cluster(tmp_path, with_load_balancer=False)
        made.runtimes["i-1"] = SystemdRuntime(
            bus_address=manager.bus_address,
            unit_dir=manager.unit_dir,
            environment_dir=tmp_path / "env",
        )
        yield made
        runtime = made.runtimes["i-1"]
        runtime.remove(runtime.owned_units())


@pytest.mark.parametrize(
    ("unit", "reason"),
    [(REJECTED, "bad-setting"), (EXITS_AT_ONCE, "exit")],
    ids=["rejected-unit-file", "exits-right-after-start"],
)
def test_a_unit_systemd_will_not_run_rolls_back_with_its_reason(
    cluster: Cluster, unit: str, reason: str
) -> None:
    v1, bad = cluster.revision("v1", unit=SLEEPER), cluster.revision("bad", unit=unit)
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    assert cluster.store.get_deploy(cluster.deploy("i-1")).outcome is Outcome.SUCCEEDED
    cluster.assign("i-1", bad)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.ROLLED_BACK
    failed = next(t for t in done.history if t.error and t.state == "starting")
    assert reason in failed.error
    assert done.error == failed.error
    runtime = cluster.runtime("i-1")
    active = [s.name for s in runtime.status(runtime.owned_units()) if s.active_state == "active"]
    assert active == [units.installed_name("app.service", v1.id)]
    assert runtime.owned_units() == [units.installed_name("app.service", v1.id)]
    assert cluster.store.get_instance("api", "i-1").current_revision == v1.id


def test_timers_start_without_running_their_job_and_oneshots_may_finish(
    cluster: Cluster, tmp_path: Path
) -> None:
    job_ran = tmp_path / "job-ran"
    units_of_revision = {
        "app.service": SLEEPER,
        "job.timer": "[Timer]\nOnCalendar=2099-01-01\n",
        "job.service": f"[Service]\nType=oneshot\nExecStart=/bin/touch {job_ran}\n",
        "migrate.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    }
    revision = cluster.store.put_revision(
        build_revision("api", "v1", units_of_revision, {}, cluster.secrets, cluster.clock.now())
    )
    cluster.instance("i-1")
    cluster.assign("i-1", revision)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.SUCCEEDED, done.error
    runtime = cluster.runtime("i-1")
    states = {s.name: s.active_state for s in runtime.status(runtime.owned_units())}
    assert states[units.installed_name("job.timer", revision.id)] == "active"
    assert states[units.installed_name("app.service", revision.id)] == "active"
    assert not job_ran.exists()  # the timer's job waits for its time
