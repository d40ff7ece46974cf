"""Lifecycle hooks on real parts (the crash matrix's world: real agent processes, a private
systemd user manager, here with its own journald, a classic ELB and the store on a moto
server):

- a failing `validate` rolls the deploy back: the previous revision runs again, the
  instance is back in service, and the hook's run is in the history;
- a hanging hook is stopped by systemd at its timeout, and nothing of it is left;
- a hook's output reaches the journal, but the secret it prints never reaches the deploy's
  history, the spans, the trace views or the agent's own log;
- an agent SIGKILLed in every state of a deploy with hooks (before the step, and after its
  effect but before its checkpoint), and in the middle of each hook, is restarted and
  converges: the interrupted hook is stopped and run again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.adapters import items
from flotilla.cli.trace import html, model, terminal
from flotilla.engine import units
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.hooks import hook_unit_name
from flotilla.engine.ports import TargetState
from flotilla.engine.records import Hook, Revision
from flotilla.engine.revisions import build_revision
from flotilla.machines import deploy as machine
from tests.integration.test_agent_crash_systemd import UNIT, Fleet, assign, prepare
from tests.support.agents import AgentProcess, aws_world, start_agent, wait_for
from tests.support.systemd_manager import PrivateSystemdManager

pytestmark = [pytest.mark.slow, pytest.mark.systemd]
SECRET = "hook-secret-4b7c9e"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with aws_world(f"hk{os.getpid()}") as world, PrivateSystemdManager(journal=True) as manager:
        yield Fleet(world, manager, tmp_path_factory.mktemp("fleet"))


def hooked_revision(fleet: Fleet, service: str, label: str, hooks: dict[str, Hook]) -> Revision:
    world = fleet.world
    revision = build_revision(
        service, label, {"app.service": UNIT.format(label=label)},
        {"app.service": {"TOKEN": SECRET}}, world.secrets, world.clock.now(), hooks,
    )  # fmt: skip
    return world.store.put_revision(revision)


def deploys_to(fleet: Fleet, instance_id: str, revision: Revision) -> list[DeployCheckpoint]:
    found = fleet.world.store.list_instance_deploys(revision.service, instance_id)
    return [d for d in found if d.to_revision == revision.id]


def run_to_the_end(
    fleet: Fleet, service: str, instance_id: str, target: Revision
) -> DeployCheckpoint:
    agent = start_agent(
        fleet.world, fleet.work, service, instance_id, runtime=fleet.runtime_options()
    )
    try:
        wait_for(
            lambda: any(d.finished for d in deploys_to(fleet, instance_id, target)),
            120,
            "the deploy",
        )
    finally:
        assert agent.terminate() == 0
    (done,) = deploys_to(fleet, instance_id, target)
    return done


def hook_units_left(fleet: Fleet) -> str:
    listed = fleet.manager.systemctl(
        "list-units", "--all", "--plain", "--no-legend", "flotilla-hook-*"
    )
    return listed.stdout.strip()


def runs(done: DeployCheckpoint) -> list[tuple[str, str, str]]:
    return [(t.state, h.hook, h.result) for t in done.history for h in t.hooks]


def recording(fleet: Fleet, instance_id: str, **extra: str) -> dict[str, Hook]:
    """Hooks that append their name to a file, then run `extra`'s script for them."""
    ran = fleet.work / f"{instance_id}-hooks.log"
    return {
        name: Hook(f'echo "$FLOTILLA_HOOK" >> {ran}\n' + extra.get(name.replace("-", "_"), ""), 30)
        for name in ("before-stop", "after-start", "validate")
    }


def ran(fleet: Fleet, instance_id: str) -> list[str]:
    path = fleet.work / f"{instance_id}-hooks.log"
    return path.read_text().splitlines() if path.exists() else []


def test_a_failing_validate_rolls_back_on_systemd(fleet: Fleet) -> None:
    service, instance_id, v1, _v2 = prepare(fleet)
    try:
        v2 = hooked_revision(
            fleet, service, "v2-bad", recording(fleet, instance_id, validate="exit 9\n")
        )
        assign(fleet.world, instance_id, v2)

        done = run_to_the_end(fleet, service, instance_id, v2)

        assert done.outcome is Outcome.ROLLED_BACK, done.error
        assert done.failed_in == "healthy"
        assert done.error is not None
        assert "hook validate of revision" in done.error
        assert "exited with status 9" in done.error
        assert ran(fleet, instance_id) == ["before-stop", "after-start", "validate"]
        assert runs(done)[-1] == ("healthy", "validate", "exit-code")
        assert fleet.active(instance_id) == [units.installed_name("app.service", v1.id)]
        assert fleet.world.store.get_instance(service, instance_id).current_revision == v1.id
        assert fleet.balancer.state(instance_id) is TargetState.HEALTHY
        assert fleet.world.locks.holders(f"deploy/{service}") == []
        assert hook_units_left(fleet) == ""
    finally:
        fleet.clean(instance_id)


def test_a_hanging_hook_is_stopped_by_systemd_at_its_timeout(fleet: Fleet) -> None:
    service, instance_id, v1, _v2 = prepare(fleet)
    pid_file = fleet.work / f"{instance_id}-hang.pid"
    try:
        hang = {"validate": Hook(f"echo $$ > {pid_file}\nexec sleep 600\n", 2)}
        v2 = hooked_revision(fleet, service, "v2-hangs", hang)
        assign(fleet.world, instance_id, v2)

        done = run_to_the_end(fleet, service, instance_id, v2)

        assert done.outcome is Outcome.ROLLED_BACK
        assert done.error is not None
        assert "was stopped at its timeout of 2 s" in done.error
        [(state, run)] = [(t.state, h) for t in done.history for h in t.hooks]
        assert (state, run.result, run.exit_status, run.timeout_seconds) == (
            "healthy", "timeout", None, 2,
        )  # fmt: skip
        # Stopped at its timeout, not at once: systemd's own timestamps can put the run a
        # few milliseconds under the 2 s it was given (1.993 s seen on a loaded machine).
        assert 1.9 <= run.duration_seconds < 60
        assert not Path(f"/proc/{int(pid_file.read_text())}").exists()
        assert hook_units_left(fleet) == ""
        assert fleet.active(instance_id) == [units.installed_name("app.service", v1.id)]
    finally:
        fleet.clean(instance_id)


def test_a_hooks_output_reaches_the_journal_and_no_secret_reaches_history_spans_or_trace(
    fleet: Fleet,
) -> None:
    service, instance_id, _v1, _v2 = prepare(fleet)
    try:
        leak = 'echo "the token is $TOKEN"\n'
        hooks = {"after-start": Hook(leak, 30), "validate": Hook(leak + "exit 3\n", 30)}
        v2 = hooked_revision(fleet, service, "v2-leaky", hooks)
        assign(fleet.world, instance_id, v2)

        done = run_to_the_end(fleet, service, instance_id, v2)

        assert done.outcome is Outcome.ROLLED_BACK
        for hook in ("after-start", "validate"):
            identifier = hook_unit_name(v2.id, hook).removesuffix(".service")
            wait_for(
                lambda name=identifier: fleet.manager.journal_lines(name) != [],
                30,
                f"the {hook} hook's output in the journal",
            )
            assert fleet.manager.journal_lines(identifier) == [f"the token is {SECRET}"]
        spans = (fleet.work / "spans.jsonl").read_text()
        assert '"hook.validate"' in spans
        view = model.from_history([done], now=done.updated_at, title=service)
        from_spans = model.from_otlp(spans.splitlines(), now=done.updated_at, title=service)
        agent_logs = "".join(p.read_text() for p in fleet.work.glob("agent-*.log"))
        for where, text in {
            "the deploy's history": repr(items.deploy_to_item(done)),
            "the spans": spans,
            "the terminal trace": terminal.render(view, width=200),
            "the terminal trace from spans": terminal.render(from_spans, width=200),
            "the HTML trace": html.render(view),
            "the agents' logs": agent_logs,
        }.items():
            assert SECRET not in text, f"the secret leaked into {where}"
        assert "validate exit 3 after" in terminal.render(view, width=200)
    finally:
        fleet.clean(instance_id)


CASES = [
    (state, point) for state in machine.HAPPY_PATH[:-1] for point in ("before-step", "after-effect")
]


@pytest.mark.parametrize(("state", "point"), CASES, ids=[f"{s}-{p}" for s, p in CASES])
def test_a_killed_agent_finishes_a_deploy_with_hooks(fleet: Fleet, state: str, point: str) -> None:
    world = fleet.world
    service, instance_id, _v1, _v2 = prepare(fleet)
    try:
        v2 = hooked_revision(fleet, service, "v2-hooked", recording(fleet, instance_id))
        assign(world, instance_id, v2)
        doomed = start_agent(
            world, fleet.work, service, instance_id, fault=f"{state}:{point}",
            runtime=fleet.runtime_options(),
        )  # fmt: skip
        assert doomed.process.wait(timeout=60) == -9, "the fault hook did not kill the agent"

        done = run_to_the_end(fleet, service, instance_id, v2)

        assert done.outcome is Outcome.SUCCEEDED, done.error
        assert fleet.active(instance_id) == [units.installed_name("app.service", v2.id)]
        assert fleet.balancer.state(instance_id) is TargetState.HEALTHY
        assert world.locks.holders(f"deploy/{service}") == []
        assert [h for _s, h, _r in runs(done)] == ["before-stop", "after-start", "validate"]
        # Each hook ran, and once more only where the kill came after its effect.
        again = {"stopping": "before-stop", "starting": "after-start", "healthy": "validate"}
        expected = ["before-stop", "after-start", "validate"]
        if point == "after-effect" and state in again:
            expected.insert(expected.index(again[state]), again[state])
        assert ran(fleet, instance_id) == expected
        assert hook_units_left(fleet) == ""
    finally:
        fleet.clean(instance_id)


@pytest.mark.parametrize("hook", ["before-stop", "after-start", "validate"])
def test_an_agent_killed_in_the_middle_of_a_hook_runs_it_again(fleet: Fleet, hook: str) -> None:
    world = fleet.world
    service, instance_id, _v1, _v2 = prepare(fleet)
    began = fleet.work / f"{instance_id}-began"
    pids = fleet.work / f"{instance_id}-pids"
    # The first run hangs (until its timeout); the one after the crash finishes: idempotent.
    script = (
        f"echo $$ >> {pids}\nif [ -e {began} ]; then exit 0; fi\ntouch {began}\nexec sleep 600\n"
    )
    try:
        v2 = hooked_revision(fleet, service, f"v2-{hook}", {hook: Hook(script, 300)})
        assign(world, instance_id, v2)
        doomed: AgentProcess = start_agent(
            world, fleet.work, service, instance_id, runtime=fleet.runtime_options()
        )
        wait_for(began.exists, 60, f"the {hook} hook to begin")
        doomed.kill()  # SIGKILL, mid-hook
        first = int(pids.read_text().split()[0])
        assert Path(f"/proc/{first}").exists(), "systemd keeps the hook's unit running"

        done = run_to_the_end(fleet, service, instance_id, v2)

        assert done.outcome is Outcome.SUCCEEDED, done.error
        assert len(pids.read_text().split()) == 2
        assert not Path(f"/proc/{first}").exists(), "the interrupted run was stopped first"
        state = {"before-stop": "stopping", "after-start": "starting", "validate": "healthy"}[hook]
        assert [t.state for t in done.history if t.resumed] == [state]
        assert runs(done) == [(state, hook, "success")]
        assert fleet.active(instance_id) == [units.installed_name("app.service", v2.id)]
        assert hook_units_left(fleet) == ""
    finally:
        fleet.clean(instance_id)
