"""SIGTERM during every state: the agent finishes the step it is in, checkpoints it, stops,
releases its own lock and exits; the next agent resumes and finishes the deploy.

In process, with the real `Agent`: the runner's fault hook sets the agent's stop event
(what its SIGTERM handler does) just before the step of each state, upgrades for the happy
path and a broken revision for `failed` and `rolling_back`. tests/integration/
test_agent_crash.py sends one SIGTERM to a real agent process at whatever moment it is in;
this covers every state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from flotilla.cli.agent_assembly import build_agent
from flotilla.engine.checkpoint import Outcome
from flotilla.engine.deploy.agent import Agent, AgentSettings
from flotilla.engine.deploy.runner import FaultHook, RunnerSettings
from flotilla.machines import deploy as machine
from tests.faults.test_agent_kills import upgraded
from tests.faults.world import FaultWorld

pytestmark = pytest.mark.faults

HAPPY = [s for s in machine.HAPPY_PATH if s not in ("pending", "done")]
FAILING = ["locking", "starting", "failed", "rolling_back", "unlocked"]
CASES = [(s, False) for s in HAPPY] + [(s, True) for s in FAILING]


def agent(
    world: FaultWorld,
    owner: str,
    stop: threading.Event,
    fault: FaultHook | None = None,
    then: Callable[[], None] = lambda: None,
) -> Agent:
    def wait(seconds: float) -> None:
        world.clock.advance(seconds)
        then()

    return build_agent(
        AgentSettings("i-1", "api", "test", owner=owner),
        world.adapters("i-1"),
        stop=stop,
        runner_settings=RunnerSettings(),
        fault=fault,
        wait_for_wakeup=wait,
    )


@pytest.mark.parametrize(
    ("state", "broken"), CASES, ids=[f"{s}{'-failing' if b else ''}" for s, b in CASES]
)
def test_sigterm_in_any_state_stops_cleanly_and_the_next_agent_finishes(
    state: str, broken: bool
) -> None:
    world = FaultWorld()
    upgraded(world, "i-1")
    target = world.revision("bad", broken=True) if broken else world.revision("v2")
    world.assign("i-1", target)

    terminated = threading.Event()
    hits: list[str] = []

    def sigterm(point: str, current: str) -> None:
        if (current, point) == (state, "before-step") and not hits:
            hits.append(current)
            terminated.set()

    first = agent(world, "agent-1", terminated, sigterm, then=terminated.set)
    first.run()  # returns only because of the stop

    assert hits == [state], "the deploy never reached the state"
    [deploy] = [
        d for d in world.store.list_instance_deploys("api", "i-1") if d.to_revision == target.id
    ]
    closed = [t for t in deploy.history if t.state == state]
    assert closed, deploy.history
    assert closed[-1].ended_at is not None, "the step in progress was not finished"
    assert not (closed[-1].error or "").startswith("interrupted")
    assert world.store.get_instance("api", "i-1").agent_owner is None, "the agent kept its instance"

    finished = threading.Event()
    second = agent(
        world,
        "agent-2",
        finished,
        then=lambda: finished.set() if world.store.get_deploy(deploy.id).finished else None,
    )
    second.run()

    done = world.store.get_deploy(deploy.id)
    world.check_converged(done)
    assert done.outcome is (Outcome.ROLLED_BACK if broken else Outcome.SUCCEEDED)
    assert world.store.get_instance("api", "i-1").agent_owner is None
