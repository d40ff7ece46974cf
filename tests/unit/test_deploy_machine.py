"""The deploy machine: every path, every guard, restoring at every state, and its diagram."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flotilla.machines import deploy
from flotilla.machines.deploy import DeployMachine, InvalidTransition, next_state

ROOT = Path(__file__).resolve().parents[2]


def walk(machine: DeployMachine, triggers: list[str]) -> list[str]:
    return [machine.fire(trigger) for trigger in triggers]


def test_the_happy_path_visits_every_state_in_order() -> None:
    triggers = [deploy.SUCCESS_TRIGGER[s] for s in deploy.HAPPY_PATH[:-1]]
    assert walk(DeployMachine(), triggers) == list(deploy.HAPPY_PATH[1:])


def test_without_a_load_balancer_its_states_are_passed_by_name() -> None:
    machine = DeployMachine(has_load_balancer=False)
    visited = walk(
        machine,
        ["begin", "lock_acquired", "lb_skipped", "lb_skipped", "units_stopped", "units_started"],
    )
    assert visited == [
        "locking",
        "deregistering",
        "draining",
        "stopping",
        "starting",
        "registering",
    ]
    assert machine.fire("lb_skipped") == "healthy"


@pytest.mark.parametrize("state", deploy.LOAD_BALANCER_STATES)
def test_guards_keep_skips_and_load_balancer_triggers_apart(state: str) -> None:
    with pytest.raises(InvalidTransition, match="with a load balancer"):
        next_state(state, "lb_skipped", has_load_balancer=True)
    with pytest.raises(InvalidTransition, match="without a load balancer"):
        next_state(state, deploy.SUCCESS_TRIGGER[state], has_load_balancer=False)


@pytest.mark.parametrize("state", deploy.WORKING_STATES)
def test_every_working_state_can_fail_into_a_rollback(state: str) -> None:
    machine = DeployMachine(state)
    assert walk(machine, ["fail", "rollback", "rollback_finished", "lock_released"]) == [
        "failed",
        "rolling_back",
        "unlocked",
        "done",
    ]


def test_a_failed_rollback_still_releases_the_lock() -> None:
    assert walk(DeployMachine("rolling_back"), ["rollback_failed", "lock_released"]) == [
        "unlocked",
        "done",
    ]


@pytest.mark.parametrize("state", ["unlocked", "done", "failed", "rolling_back"])
def test_states_past_the_work_cannot_fail_again(state: str) -> None:
    with pytest.raises(InvalidTransition, match="not allowed"):
        next_state(state, "fail")


@pytest.mark.parametrize(
    ("state", "trigger"),
    [
        ("pending", "lock_acquired"),
        ("locking", "units_started"),
        ("done", "begin"),
        ("healthy", "nope"),
    ],
)
def test_triggers_out_of_place_are_refused(state: str, trigger: str) -> None:
    with pytest.raises(InvalidTransition):
        next_state(state, trigger)


@pytest.mark.parametrize("state", deploy.HAPPY_PATH[:-1])
def test_a_machine_restored_at_any_state_goes_on_to_done(state: str) -> None:
    machine = DeployMachine(state)
    path = deploy.HAPPY_PATH[deploy.HAPPY_PATH.index(state) :]
    assert walk(machine, [deploy.SUCCESS_TRIGGER[s] for s in path[:-1]])[-1] == "done"


def test_unknown_states_and_versions_cannot_be_resumed() -> None:
    assert deploy.can_resume(deploy.MACHINE_VERSION, "draining")
    assert not deploy.can_resume(deploy.MACHINE_VERSION + 1, "draining")
    assert not deploy.can_resume(deploy.MACHINE_VERSION, "warping")
    with pytest.raises(InvalidTransition, match="unknown state"):
        DeployMachine("warping")


def test_rollback_is_needed_only_once_units_were_touched() -> None:
    assert not deploy.rollback_needed("draining")
    assert deploy.rollback_needed("stopping")
    assert deploy.rollback_needed("healthy")


def test_the_documented_diagram_matches_the_machine() -> None:
    doc = (ROOT / "docs" / "deploy-machine.md").read_text()
    block = re.search(r"```mermaid\n(.*?)```", doc, re.S)
    assert block is not None
    assert block.group(1) == deploy.mermaid(), (
        "docs/deploy-machine.md is out of date: run .venv/bin/python scripts/render-machine-diagram"
    )
    for transition in deploy.TRANSITIONS:
        assert transition["trigger"] in block.group(1)
