"""The deploy machine: every path, every guard, every refusal, restoring, versions, diagram.

The expected transitions are written out by hand below (`EXPECTED`), so a change to the
machine's table shows up here as a failing test, not as a silently regenerated diagram.
"""

from __future__ import annotations

import hashlib
import json
import logging
import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flotilla.engine.checkpoint import Outcome as CheckpointOutcome
from flotilla.machines import deploy
from flotilla.machines.deploy import (
    CannotResume,
    DeployMachine,
    InvalidTransition,
    Outcome,
    RollbackWork,
)
from flotilla.machines.diagram import SKIP_LABEL, mermaid

ROOT = Path(__file__).resolve().parents[2]
RENDER_COMMAND = ".venv/bin/python scripts/render-machine-diagram"

_WORK = {"fail": "failed"}
EXPECTED_WITH_LB: dict[str, dict[str, str]] = {
    "pending": {"begin": "locking"},
    "locking": {"lock_acquired": "deregistering", **_WORK},
    "deregistering": {"deregistered": "draining", **_WORK},
    "draining": {"drained": "stopping", **_WORK},
    "stopping": {"units_stopped": "starting", **_WORK},
    "starting": {"units_started": "registering", **_WORK},
    "registering": {"registered": "healthy", **_WORK},
    "healthy": {"health_passed": "unlocked", **_WORK},
    "unlocked": {"lock_released": "done"},
    "done": {},
    "failed": {"rollback": "rolling_back"},
    "rolling_back": {"rollback_finished": "unlocked", "rollback_failed": "unlocked"},
}
EXPECTED_WITHOUT_LB = {
    **EXPECTED_WITH_LB,
    "deregistering": {"lb_skipped": "draining", **_WORK},
    "draining": {"lb_skipped": "stopping", **_WORK},
    "registering": {"lb_skipped": "healthy", **_WORK},
}


# Left by `skipped` only when the deploy's facts say so (an unassignment, or no unit that
# serves traffic changes): refused with the default facts, so kept apart from the tables.
EXPECTED_SKIPS = {
    "deregistering": "draining",
    "draining": "stopping",
    "starting": "registering",
    "registering": "healthy",
}


def expected(has_load_balancer: bool) -> dict[str, dict[str, str]]:
    return EXPECTED_WITH_LB if has_load_balancer else EXPECTED_WITHOUT_LB


def walk(machine: DeployMachine, triggers: list[str]) -> list[str]:
    return [machine.fire(trigger) for trigger in triggers]


def run_to_done(machine: DeployMachine, has_load_balancer: bool) -> list[str]:
    """Drive the machine as the engine does when every step succeeds."""
    visited = []
    while not machine.finished:
        visited.append(
            machine.fire(deploy.success_trigger(machine.state, has_load_balancer=has_load_balancer))
        )
    return visited


# --- the shape of the machine ------------------------------------------------------------


def test_the_states_and_their_groups() -> None:
    assert deploy.FAILURE_STATES == ("failed", "rolling_back")
    assert deploy.STATES == deploy.HAPPY_PATH + deploy.FAILURE_STATES
    assert set(deploy.STATES) == set(EXPECTED_WITH_LB)
    assert deploy.WORKING_STATES == (
        "locking",
        "deregistering",
        "draining",
        "stopping",
        "starting",
        "registering",
        "healthy",
    )
    assert deploy.TERMINAL_STATES == ("done",)
    assert set(deploy.STEP_STATES) == set(deploy.STATES) - {"done"}
    assert deploy.LOAD_BALANCER_STATES == ("deregistering", "draining", "registering")
    assert isinstance(deploy.MACHINE_VERSION, int)


def test_every_trigger_is_a_plain_word() -> None:
    assert set(deploy.TRIGGERS) == {
        trigger for table in (EXPECTED_WITH_LB, EXPECTED_WITHOUT_LB) for t in table.values()
        for trigger in t
    } | {"skipped"}  # fmt: skip
    assert all(trigger.replace("_", "").isalpha() for trigger in deploy.TRIGGERS)


# --- paths -------------------------------------------------------------------------------


def test_the_happy_path_visits_every_state_in_order() -> None:
    machine = DeployMachine(has_load_balancer=True)
    triggers = [
        "begin",
        "lock_acquired",
        "deregistered",
        "drained",
        "units_stopped",
        "units_started",
        "registered",
        "health_passed",
    ]
    assert walk(machine, triggers) == list(deploy.HAPPY_PATH[1:-1])
    assert machine.outcome is Outcome.SUCCEEDED  # decided on reaching unlocked
    assert machine.fire("lock_released") == "done"
    assert machine.finished
    assert machine.outcome is Outcome.SUCCEEDED
    assert machine.rollback_work is None


def test_without_a_load_balancer_its_states_are_visited_and_skipped_by_name() -> None:
    machine = DeployMachine(has_load_balancer=False)
    triggers = [
        "begin",
        "lock_acquired",
        "lb_skipped",
        "lb_skipped",
        "units_stopped",
        "units_started",
        "lb_skipped",
        "health_passed",
        "lock_released",
    ]
    assert walk(machine, triggers) == list(deploy.HAPPY_PATH[1:])
    assert machine.outcome is Outcome.SUCCEEDED


@pytest.mark.parametrize("has_load_balancer", [True, False])
def test_success_triggers_lead_along_the_happy_path(has_load_balancer: bool) -> None:
    machine = DeployMachine(has_load_balancer=has_load_balancer)
    assert run_to_done(machine, has_load_balancer) == list(deploy.HAPPY_PATH[1:])
    skips = [
        state
        for state in deploy.HAPPY_PATH[:-1]
        if deploy.success_trigger(state, has_load_balancer=has_load_balancer) == "lb_skipped"
    ]
    assert skips == ([] if has_load_balancer else list(deploy.LOAD_BALANCER_STATES))


@pytest.mark.parametrize("has_load_balancer", [True, False])
@pytest.mark.parametrize("state", deploy.WORKING_STATES)
def test_a_failure_in_any_working_state_is_rolled_back(state: str, has_load_balancer: bool) -> None:
    machine = DeployMachine(state, has_load_balancer=has_load_balancer)
    assert machine.fire("fail") == "failed"
    assert machine.failed_in == state
    assert machine.rollback_work == deploy.rollback_work(state, has_load_balancer=has_load_balancer)
    undecided = machine.outcome  # a local, so mypy does not narrow machine.outcome to None
    assert undecided is None
    assert walk(machine, ["rollback", "rollback_finished"]) == ["rolling_back", "unlocked"]
    assert machine.outcome is Outcome.ROLLED_BACK
    assert machine.fire("lock_released") == "done"
    assert machine.outcome is Outcome.ROLLED_BACK


@pytest.mark.parametrize("state", deploy.WORKING_STATES)
def test_a_failed_rollback_still_releases_the_lock_and_ends_failed(state: str) -> None:
    machine = DeployMachine(state, has_load_balancer=True)
    visited = walk(machine, ["fail", "rollback", "rollback_failed", "lock_released"])
    assert visited == ["failed", "rolling_back", "unlocked", "done"]
    assert machine.outcome is Outcome.FAILED


@pytest.mark.parametrize("state", ["pending", "unlocked", "done", "failed", "rolling_back"])
def test_only_working_states_can_fail(state: str) -> None:
    machine = DeployMachine(state, has_load_balancer=True)
    with pytest.raises(InvalidTransition, match=f"'fail' is not allowed in state '{state}'"):
        machine.fire("fail")
    assert machine.state == state


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("has_load_balancer", [True, False])
@pytest.mark.parametrize("state", deploy.STATES)
def test_every_trigger_in_every_state_moves_as_written_or_is_refused(
    state: str, has_load_balancer: bool
) -> None:
    allowed = expected(has_load_balancer)[state]
    assert set(deploy.allowed_triggers(state, has_load_balancer=has_load_balancer)) == set(allowed)
    for trigger in deploy.TRIGGERS:
        machine = DeployMachine(state, has_load_balancer=has_load_balancer)
        if trigger in allowed:
            assert machine.fire(trigger) == allowed[trigger], (state, trigger)
            continue
        with pytest.raises(InvalidTransition) as refused:
            machine.fire(trigger)
        assert machine.state == state, "a refused trigger must not move the machine"
        assert (refused.value.state, refused.value.trigger) == (state, trigger)
        assert f"{trigger!r} is not allowed in state {state!r}" in str(refused.value)


@pytest.mark.parametrize("state", deploy.LOAD_BALANCER_STATES)
def test_guards_keep_skips_and_load_balancer_triggers_apart(state: str) -> None:
    with pytest.raises(InvalidTransition, match=r"\(with a load balancer\).*allowed there: "):
        DeployMachine(state, has_load_balancer=True).fire("lb_skipped")
    lb_trigger = deploy.SUCCESS_TRIGGER[state]
    with pytest.raises(InvalidTransition, match=r"\(without a load balancer\).*lb_skipped"):
        DeployMachine(state, has_load_balancer=False).fire(lb_trigger)


def test_an_unknown_trigger_is_named_as_such() -> None:
    with pytest.raises(InvalidTransition, match=r"unknown trigger 'explode'.*health_passed, fail"):
        DeployMachine("healthy", has_load_balancer=True).fire("explode")
    with pytest.raises(InvalidTransition, match=r"nothing \(a final state\)"):
        DeployMachine("done", has_load_balancer=True).fire("begin")


def test_invalid_transitions_are_the_modules_own_errors() -> None:
    assert issubclass(InvalidTransition, deploy.DeployMachineError)
    assert issubclass(CannotResume, deploy.DeployMachineError)
    with pytest.raises(InvalidTransition):
        deploy.success_trigger("done", has_load_balancer=True)


# --- outcome and rollback work -----------------------------------------------------------


def test_the_outcome_follows_from_two_facts() -> None:
    assert deploy.outcome(failed=False, rollback_failed=False) is Outcome.SUCCEEDED
    assert deploy.outcome(failed=True, rollback_failed=False) is Outcome.ROLLED_BACK
    assert deploy.outcome(failed=True, rollback_failed=True) is Outcome.FAILED
    with pytest.raises(ValueError, match="only have failed in a deploy that failed"):
        deploy.outcome(failed=False, rollback_failed=True)


def test_the_outcome_words_are_the_checkpoints_words() -> None:
    assert [o.value for o in Outcome] == [o.value for o in CheckpointOutcome]


NOTHING = RollbackWork(restore_units=False, reregister=False)
REREGISTER = RollbackWork(restore_units=False, reregister=True)
EVERYTHING = RollbackWork(restore_units=True, reregister=True)


@pytest.mark.parametrize(
    ("failed_in", "work"),
    [
        ("locking", NOTHING),  # perhaps no lock held yet, nothing touched
        ("deregistering", REREGISTER),  # the deregistration may have happened
        ("draining", REREGISTER),
        ("stopping", EVERYTHING),
        ("starting", EVERYTHING),
        ("registering", EVERYTHING),
        ("healthy", EVERYTHING),
        (None, EVERYTHING),  # unknown: undo all, every rollback step is idempotent
        ("pending", EVERYTHING),  # not a working state: only an older definition wrote this
    ],
)
def test_rollback_work_depends_on_where_the_deploy_failed(
    failed_in: str | None, work: RollbackWork
) -> None:
    assert deploy.rollback_work(failed_in, has_load_balancer=True) == work
    without_lb = deploy.rollback_work(failed_in, has_load_balancer=False)
    assert without_lb == RollbackWork(restore_units=work.restore_units, reregister=False)
    assert work.needed is (work.restore_units or work.reregister)


# --- restoring and versions --------------------------------------------------------------


@pytest.mark.parametrize("has_load_balancer", [True, False])
@pytest.mark.parametrize("state", deploy.STATES)
def test_a_machine_restored_at_any_state_goes_on_to_done(
    state: str, has_load_balancer: bool
) -> None:
    failed_in = "starting" if state in deploy.FAILURE_STATES else None
    machine = DeployMachine.restore(
        deploy.MACHINE_VERSION, state, has_load_balancer=has_load_balancer, failed_in=failed_in
    )
    assert machine.state == state
    visited = run_to_done(machine, has_load_balancer)
    assert machine.state == "done"
    if state in deploy.FAILURE_STATES:
        assert visited[-2:] == ["unlocked", "done"]
        assert machine.outcome is Outcome.ROLLED_BACK
    else:
        start = deploy.HAPPY_PATH.index(state)
        assert visited == list(deploy.HAPPY_PATH[start + 1 :])
        assert machine.outcome is Outcome.SUCCEEDED


def test_restoring_takes_the_facts_the_outcome_needs() -> None:
    def at(state: str, **facts: Any) -> DeployMachine:
        return DeployMachine.restore(1, state, has_load_balancer=True, **facts)

    assert at("unlocked").outcome is Outcome.SUCCEEDED
    assert at("unlocked", failed_in="draining").outcome is Outcome.ROLLED_BACK
    assert at("done", failed_in="draining", rollback_failed=True).outcome is Outcome.FAILED
    assert at("rolling_back", failed_in="draining").rollback_work == REREGISTER
    assert at("failed").rollback_work == EVERYTHING  # failed, but where is not known
    with pytest.raises(ValueError, match="failed rollback"):
        at("unlocked", rollback_failed=True)
    with pytest.raises(ValueError, match="failed_in must be a state"):
        at("failed", failed_in="exploding")


def test_restoring_runs_no_callbacks_for_the_restored_state() -> None:
    # Restored at `failed`, the `before` callback of `fail` has not run: failed_in stays
    # whatever the checkpoint said (here: unknown), it is not set to `failed`.
    assert DeployMachine.restore(1, "failed", has_load_balancer=True).failed_in is None


def test_which_stored_checkpoints_can_be_resumed() -> None:
    current = deploy.MACHINE_VERSION
    assert all(deploy.can_resume(current, state) for state in deploy.STATES)
    assert not deploy.can_resume(current, "warping")
    assert not deploy.can_resume(current + 1, "draining")  # written by a newer agent
    assert not deploy.can_resume(0, "draining")
    with pytest.raises(CannotResume, match=f"written by deploy machine version {current + 1}"):
        DeployMachine.restore(current + 1, "draining", has_load_balancer=True)
    with pytest.raises(CannotResume, match="'warping' is not a state"):
        DeployMachine.restore(current, "warping", has_load_balancer=True)
    with pytest.raises(CannotResume, match="'warping' is not a state"):
        DeployMachine("warping", has_load_balancer=True)


# The definition as of MACHINE_VERSION 1. When this fails, the machine changed: bump
# MACHINE_VERSION if a checkpoint written before the change could not be followed after it
# (and say in _RESUMABLE_STATES which older states still can), then update both values.
# Version 3 kept the table of version 2 (hooks changed what three steps do, not the flow).
PINNED_DEFINITION = (3, "f379e456a996e5b76ab613032644a71aca6bb38d6fc6f12fa880f707ec509a31")


def _definition_fingerprint() -> str:
    table = [
        [t["trigger"], t["source"], t["dest"], t.get("conditions")] for t in deploy.TRANSITIONS
    ]
    canonical = json.dumps([list(deploy.STATES), table], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def test_a_changed_definition_is_a_deliberate_version_decision() -> None:
    assert (deploy.MACHINE_VERSION, _definition_fingerprint()) == PINNED_DEFINITION, (
        "the deploy machine's definition changed: decide whether MACHINE_VERSION must be "
        "bumped (see its comment), then update PINNED_DEFINITION"
    )


def test_transitions_binds_every_helper_to_the_model(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="transitions"):
        machine = DeployMachine("healthy", has_load_balancer=True)
    assert [r.getMessage() for r in caplog.records] == []  # e.g. "Skip binding of ..."
    assert machine.may_fail()  # type: ignore[attr-defined]  # bound by transitions


# --- the generated document --------------------------------------------------------------


@pytest.fixture(scope="module")
def render() -> Callable[[str], str]:
    script = runpy.run_path(str(ROOT / "scripts" / "render-machine-diagram"))
    function: Callable[[str], str] = script["render"]
    return function


def test_the_documented_diagram_matches_the_machine(render: Callable[[str], str]) -> None:
    doc = (ROOT / "docs" / "deploy-machine.md").read_text()
    assert render(doc) == doc, f"docs/deploy-machine.md is out of date: run {RENDER_COMMAND}"


def test_a_stale_document_is_noticed_and_rewritten(render: Callable[[str], str]) -> None:
    doc = (ROOT / "docs" / "deploy-machine.md").read_text()
    stale = doc.replace("healthy --> unlocked: health_passed", "healthy --> done: health_passed")
    assert stale != doc
    assert render(stale) == doc
    with pytest.raises(SystemExit, match="expected one"):
        render(doc.replace("<!-- END GENERATED -->", ""))


@pytest.mark.parametrize("has_load_balancer", [True, False])
def test_the_diagram_draws_exactly_the_expected_transitions(has_load_balancer: bool) -> None:
    guard = "[with LB]" if has_load_balancer else "[no LB]"
    other = "[no LB]" if has_load_balancer else "[with LB]"
    drawn = set()
    for line in mermaid().splitlines()[1:]:
        edge, _, label = line.strip().partition(": ")
        source, dest = edge.split(" --> ")
        if "[*]" in (source, dest) or label.endswith(other):
            continue
        drawn.add((source, label.removesuffix(f" {guard}").removesuffix(SKIP_LABEL), dest))
    wanted = {
        (state, trigger, dest)
        for state, moves in expected(has_load_balancer).items()
        for trigger, dest in moves.items()
    } | {(state, "skipped", dest) for state, dest in EXPECTED_SKIPS.items()}
    assert drawn == wanted


def test_a_failed_step_starts_the_rollback_and_a_failed_rollback_ends_the_deploy() -> None:
    for state in deploy.STEP_STATES:
        trigger = deploy.failure_trigger(state)
        if state == deploy.ROLLING_BACK_STATE:
            assert trigger == deploy.ROLLBACK_FAILED
            assert DeployMachine(state, has_load_balancer=True).fire(trigger) == "unlocked"
        else:
            assert trigger == deploy.FAIL_TRIGGER


# --- skips the deploy's own facts decide (issue 15) ----------------------------------------


def _run_with(has_load_balancer: bool, **facts: bool) -> list[tuple[str, str]]:
    """(state, trigger) pairs of a deploy whose every step succeeds, with these facts."""
    machine = DeployMachine(has_load_balancer=has_load_balancer, **facts)
    fired = []
    while not machine.finished:
        state = machine.state
        machine.advance(deploy.StepResult.SUCCEEDED)
        fired.append((state, machine.state))
    return fired


@pytest.mark.parametrize("has_load_balancer", [True, False])
def test_an_unassignment_skips_starting_and_registering(has_load_balancer: bool) -> None:
    facts = {"has_load_balancer": has_load_balancer, "unassigning": True}
    skipped = {s for s in deploy.STEP_STATES if deploy.skip_reason(s, **facts) is not None}
    lb_states = {"deregistering", "draining"} if not has_load_balancer else set()
    assert skipped == {"starting", "registering"} | lb_states
    assert deploy.skip_reason("registering", **facts) is not None
    machine = DeployMachine("starting", **facts)
    assert machine.skip_reason == "assigned no revision: nothing to start"
    assert machine.advance(deploy.StepResult.SKIPPED) == "registering"
    assert machine.advance(deploy.StepResult.SKIPPED) == "healthy"
    # The same states as any deploy, in the same order.
    visited = [state for state, _ in _run_with(has_load_balancer, unassigning=True)]
    assert visited == list(deploy.HAPPY_PATH[:-1])


def test_an_unassignment_never_keeps_traffic() -> None:
    facts = {"has_load_balancer": True, "unassigning": True, "traffic_kept": True}
    assert deploy.skip_reason("deregistering", **facts) is None
    assert deploy.skip_reason("draining", **facts) is None
    machine = DeployMachine("stopping", failed_in="stopping", **facts)
    assert machine.rollback_work == RollbackWork(restore_units=True, reregister=True)


def test_kept_traffic_skips_the_load_balancer_states_and_their_rollback() -> None:
    facts = {"has_load_balancer": True, "traffic_kept": True}
    for state in deploy.LOAD_BALANCER_STATES:
        assert "no unit that serves traffic changes" in (deploy.skip_reason(state, **facts) or "")
        assert "skipped" in deploy.allowed_triggers(state, **facts)
        assert "skipped" not in deploy.allowed_triggers(state, has_load_balancer=True)
    assert deploy.skip_reason("starting", **facts) is None
    machine = DeployMachine("starting", failed_in="starting", **facts)
    assert machine.rollback_work == RollbackWork(restore_units=True, reregister=False)
    # Without a load balancer the named `lb_skipped` still leaves them.
    assert deploy.success_trigger("draining", has_load_balancer=False, traffic_kept=True) == (
        "lb_skipped"
    )


def test_skipped_is_refused_where_the_facts_do_not_skip() -> None:
    with pytest.raises(InvalidTransition):
        DeployMachine("starting", has_load_balancer=True).fire("skipped")
    with pytest.raises(InvalidTransition):
        DeployMachine("stopping", has_load_balancer=True, unassigning=True).fire("skipped")


def test_whether_traffic_is_kept_is_decided_in_locking_only() -> None:
    machine = DeployMachine(has_load_balancer=True)
    with pytest.raises(ValueError, match="locking"):
        machine.note_traffic_kept(True)
    machine.advance(deploy.StepResult.SUCCEEDED)
    machine.note_traffic_kept(True)
    machine.advance(deploy.StepResult.SUCCEEDED)
    assert machine.state == "deregistering"
    assert machine.skip_reason is not None
    with pytest.raises(ValueError, match="locking"):
        machine.note_traffic_kept(False)


def test_version_1_and_2_checkpoints_are_still_resumed_in_every_state() -> None:
    assert deploy.MACHINE_VERSION == 3
    for state in deploy.STATES:
        assert deploy.can_resume(1, state)
        assert deploy.can_resume(2, state)
