"""Lifecycle hooks in a deploy, on the engine with real processes (the process runtime) and
a fake clock for the engine: where each hook runs, what a failing or hanging one does,
what the history and the spans keep (never output or a secret), and a crash anywhere,
mid-hook too, resumed by running the hook again."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flotilla.adapters import items
from flotilla.engine import units
from flotilla.engine.checkpoint import DeployCheckpoint, HookOutcome, Outcome
from flotilla.engine.deploy.runner import AlwaysLive, DeployRunner, RunnerSettings
from flotilla.engine.records import Hook, Revision, deploy_id_for
from flotilla.machines import deploy as machine
from tests.support.cluster import Cluster

SECRET = "s3cret-token-value"


def journal(cluster: Cluster) -> Path:
    return cluster.root / "hooks-ran.log"


def recording(cluster: Cluster, label: str, **scripts: str) -> dict[str, Hook]:
    """Every hook appends `<label> <hook>` to one file, then runs its extra script."""
    record = f'echo "{label} $FLOTILLA_HOOK" >> {journal(cluster)}\n'
    return {
        name: Hook(record + scripts.get(name.replace("-", "_"), ""), 5)
        for name in ("before-stop", "after-start", "validate")
    }


def ran(cluster: Cluster) -> list[str]:
    path = journal(cluster)
    return path.read_text().splitlines() if path.exists() else []


def hooks_in(done: DeployCheckpoint) -> list[tuple[str, str, str]]:
    return [(t.state, h.hook, h.result) for t in done.history for h in t.hooks]


def upgrade(cluster: Cluster, v1: Revision, v2: Revision) -> DeployCheckpoint:
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    cluster.deploy("i-1")
    journal(cluster).unlink(missing_ok=True)
    cluster.assign("i-1", v2)
    return cluster.store.get_deploy(cluster.deploy("i-1"))


def running(cluster: Cluster) -> list[str]:
    runtime = cluster.runtime("i-1")
    return [s.name for s in runtime.status(runtime.owned_units()) if s.active_state == "active"]


def test_hooks_run_in_their_states_in_order_and_are_kept_in_the_history(
    cluster: Cluster,
) -> None:
    v1 = cluster.revision("v1")
    v2 = cluster.revision("v2", env={"TOKEN": SECRET}, hooks=recording(cluster, "v2"))

    done = upgrade(cluster, v1, v2)

    assert done.outcome is Outcome.SUCCEEDED, done.error
    assert ran(cluster) == ["v2 before-stop", "v2 after-start", "v2 validate"]
    assert hooks_in(done) == [
        ("stopping", "before-stop", "success"),
        ("starting", "after-start", "success"),
        ("healthy", "validate", "success"),
    ]
    outcome = next(h for t in done.history for h in t.hooks)
    assert (outcome.revision, outcome.timeout_seconds, outcome.exit_status) == (v2.id, 5, 0)
    assert items.deploy_from_item(items.deploy_to_item(done)) == done


def test_a_failing_validate_rolls_back_and_the_previous_revisions_hooks_run(
    cluster: Cluster,
) -> None:
    v1 = cluster.revision("v1", hooks=recording(cluster, "v1"))
    v2 = cluster.revision("v2", hooks=recording(cluster, "v2", validate="exit 7\n"))

    done = upgrade(cluster, v1, v2)

    assert done.outcome is Outcome.ROLLED_BACK
    assert done.failed_in == "healthy"
    assert done.error is not None
    assert f"hook validate of revision {v2.id[:12]} exited with status 7" in done.error
    assert "journalctl -u flotilla-hook-" in done.error
    assert ran(cluster) == [
        "v2 before-stop", "v2 after-start", "v2 validate",  # the deploy
        "v1 after-start", "v1 validate",  # the rollback, for the revision it restored
    ]  # fmt: skip
    assert hooks_in(done)[-3:] == [
        ("healthy", "validate", "exit-code"),
        ("rolling_back", "after-start", "success"),
        ("rolling_back", "validate", "success"),
    ]
    assert running(cluster) == [units.installed_name("app.service", v1.id)]
    assert cluster.store.get_instance("api", "i-1").current_revision == v1.id
    assert cluster.lb.registered() == {"i-1"}
    assert cluster.locks.holders("deploy/api") == []


def test_a_failing_before_stop_fails_while_the_old_units_still_run(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    v2 = cluster.revision("v2", hooks=recording(cluster, "v2", before_stop="exit 1\n"))

    done = upgrade(cluster, v1, v2)

    assert done.outcome is Outcome.ROLLED_BACK
    assert done.failed_in == "stopping"
    assert ran(cluster) == ["v2 before-stop"]
    assert running(cluster) == [units.installed_name("app.service", v1.id)]


def test_a_failing_after_start_rolls_back(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    v2 = cluster.revision("v2", hooks=recording(cluster, "v2", after_start="exit 2\n"))

    done = upgrade(cluster, v1, v2)

    assert (done.outcome, done.failed_in) == (Outcome.ROLLED_BACK, "starting")
    assert ran(cluster) == ["v2 before-stop", "v2 after-start"]
    assert running(cluster) == [units.installed_name("app.service", v1.id)]


def test_a_hanging_hook_is_stopped_at_its_timeout_and_fails_the_deploy(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    v2 = cluster.revision("v2", hooks={"validate": Hook("exec sleep 600\n", 1)})

    done = upgrade(cluster, v1, v2)

    assert done.outcome is Outcome.ROLLED_BACK
    assert done.error is not None
    assert "hook validate of revision" in done.error
    assert "was stopped at its timeout of 1 s" in done.error
    [(state, outcome)] = [(t.state, h) for t in done.history for h in t.hooks]
    assert state == "healthy"
    assert (outcome.result, outcome.exit_status) == ("timeout", None)
    assert outcome.duration_seconds >= 1


def test_a_hooks_output_and_environment_never_reach_history_or_spans(
    cluster: Cluster, spans: InMemorySpanExporter
) -> None:
    v1 = cluster.revision("v1")
    leak = 'echo "the token is $TOKEN"; echo "$TOKEN" >&2\n'
    hooks = {
        "after-start": Hook(leak, 5),
        "validate": Hook(leak + "exit 1\n", 5),
    }
    v2 = cluster.revision("v2", env={"TOKEN": SECRET}, hooks=hooks)

    done = upgrade(cluster, v1, v2)

    assert done.outcome is Outcome.ROLLED_BACK
    log = cluster.root / "i-1" / "log"
    assert SECRET in "".join(p.read_text() for p in log.glob("flotilla-hook-*.log"))
    assert SECRET not in repr(items.deploy_to_item(done))
    recorded = spans.get_finished_spans()
    hook_spans = [s for s in recorded if s.name.startswith("hook.")]
    assert [s.name for s in hook_spans] == ["hook.after-start", "hook.validate"]
    assert hook_spans[-1].attributes is not None
    assert hook_spans[-1].attributes["flotilla.hook.exit_status"] == 1
    for span in recorded:
        assert SECRET not in repr(span.to_json())


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even `except Exception` blocks."""


CRASH_POINTS = [
    (state, point) for state in machine.HAPPY_PATH[:-1] for point in ("before-step", "after-effect")
]


def finish_after_crash(cluster: Cluster, v2: Revision) -> DeployCheckpoint:
    cluster.clock.advance(5)
    instance = cluster.store.get_instance("api", "i-1")
    deploy_id = deploy_id_for(instance)
    runner = cluster.runner("i-1")
    if not any(d.id == deploy_id for d in cluster.store.list_instance_deploys("api", "i-1")):
        deploy_id = runner.create(instance, cluster.service).id  # killed in `pending`
    done = runner.run(deploy_id, cluster.service)
    assert done.outcome is Outcome.SUCCEEDED, done.error
    assert running(cluster) == [units.installed_name("app.service", v2.id)]
    assert cluster.lb.registered() == {"i-1"}
    assert cluster.locks.holders("deploy/api") == []
    return done


@pytest.mark.parametrize(("crash_state", "crash_point"), CRASH_POINTS)
def test_a_deploy_with_hooks_killed_anywhere_converges(
    cluster: Cluster, crash_state: str, crash_point: str
) -> None:
    v1 = cluster.revision("v1")
    v2 = cluster.revision("v2", env={"COLOR": "blue"}, hooks=recording(cluster, "v2"))
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    cluster.deploy("i-1")
    cluster.assign("i-1", v2)

    def crash(point: str, state: str) -> None:
        if (state, point) == (crash_state, crash_point):
            raise Crash

    with pytest.raises(Crash):
        cluster.deploy("i-1", fault=crash)
    done = finish_after_crash(cluster, v2)

    # Each hook ran once more only if the kill came after its effect, before its record.
    again = {"stopping": "v2 before-stop", "starting": "v2 after-start", "healthy": "v2 validate"}
    expected = ["v2 before-stop", "v2 after-start", "v2 validate"]
    if crash_point == "after-effect" and crash_state in again:
        expected.insert(expected.index(again[crash_state]) + 1, again[crash_state])
    assert ran(cluster) == expected
    assert [h for _s, h, _r in hooks_in(done)] == ["before-stop", "after-start", "validate"]


class CrashMidHook(AlwaysLive):
    """Kills the 'agent' while the hook runs: from the runtime's wait, once the hook's
    script has begun (it wrote its marker)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def keep_alive(self) -> None:
        if self.marker.exists():
            raise Crash


@pytest.mark.parametrize("hook", ["before-stop", "after-start", "validate"])
def test_a_kill_in_the_middle_of_a_hook_resumes_by_running_it_again(
    cluster: Cluster, hook: str
) -> None:
    marker = cluster.root / "began"
    pids = cluster.root / "pids"
    # The first run hangs (and would until its timeout); the second one finds the marker
    # and finishes: idempotent, as hooks must be.
    script = (
        f"echo $$ >> {pids}\nif [ -e {marker} ]; then exit 0; fi\ntouch {marker}\nexec sleep 600\n"
    )
    v1 = cluster.revision("v1")
    v2 = cluster.revision("v2", env={"COLOR": "blue"}, hooks={hook: Hook(script, 300)})
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    cluster.deploy("i-1")
    cluster.assign("i-1", v2)
    instance = cluster.store.get_instance("api", "i-1")
    doomed = DeployRunner(
        cluster.adapters("i-1").ports,
        settings=RunnerSettings(),
        liveness=CrashMidHook(marker),
    )
    created = doomed.create(instance, cluster.service)
    with pytest.raises(Crash):
        doomed.run(created.id, cluster.service, known=created)
    first = int(pids.read_text().split()[0])
    assert Path(f"/proc/{first}").exists(), "the interrupted hook runs on after the crash"

    done = finish_after_crash(cluster, v2)

    assert len(pids.read_text().split()) == 2  # run again, once
    assert not _alive(first), "the interrupted run was stopped before the hook ran again"
    state = {"before-stop": "stopping", "after-start": "starting", "validate": "healthy"}[hook]
    assert [t.state for t in done.history if t.resumed] == [state]
    assert hooks_in(done) == [(state, hook, "success")]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return not stat.rsplit(") ", 1)[1].startswith("Z")


def test_an_unassignment_runs_no_hook(cluster: Cluster) -> None:
    v1 = cluster.revision("v1", hooks=recording(cluster, "v1"))
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    cluster.deploy("i-1")
    journal(cluster).unlink()
    current = cluster.store.get_instance("api", "i-1")
    cluster.store.set_assignment("api", "i-1", None, expected_version=current.assignment_version)

    done = cluster.store.get_deploy(cluster.deploy("i-1"))

    assert done.outcome is Outcome.SUCCEEDED, done.error
    assert ran(cluster) == []
    assert [h for t in done.history for h in t.hooks] == list[HookOutcome]()
