"""A running agent whose deploy stopped in `unlocked` (an outage, or a lost answer that
made the runner think another one was ahead) takes it up again at its next iteration.

`healthy` records the new revision as the instance's current one, so the assignment looks
reached; the agent remembers the deploy it started until that deploy is done. Without
that, only a restart of the agent finished it, and meanwhile the scheduler counted it in
flight: a rollout with max_in_flight 1 stalled. Found by tests/faults/test_aws_faults.py
with a lost answer to the checkpoint write that leaves `unlocked` (seed 126517113).
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from flotilla.cli.agent_assembly import build_agent
from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.deploy.agent import AgentSettings
from flotilla.engine.errors import TransientError
from flotilla.engine.records import CurrentRevision, Lease
from tests.faults.world import FaultWorld

pytestmark = pytest.mark.faults


class OutageAtDone:
    """The store, failing every checkpoint write that would finish a deploy, for a while."""

    def __init__(self, world: FaultWorld, failures: int) -> None:
        self.inner = world.store
        self.failures = failures

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def update_deploy(
        self,
        checkpoint: DeployCheckpoint,
        *,
        current: CurrentRevision | None = None,
        release: Lease | None = None,
    ) -> DeployCheckpoint:
        if checkpoint.state == "done" and self.failures > 0:
            self.failures -= 1
            raise TransientError("writing the checkpoint: DynamoDB is unavailable (injected)")
        return self.inner.update_deploy(checkpoint, current=current, release=release)


def test_a_running_agent_finishes_a_deploy_that_stopped_in_unlocked() -> None:
    from tests.faults.test_agent_kills import upgraded

    world = FaultWorld()
    upgraded(world, "i-1")
    store = OutageAtDone(world, failures=6)  # longer than the runner's retries: it stops
    adapters = dataclasses.replace(world.adapters("i-1"), store=store)
    stop = threading.Event()
    polls = []

    def wait(seconds: float) -> None:
        world.clock.advance(seconds)
        polls.append(seconds)
        if len(polls) >= 30:  # five minutes of polls after the outage
            stop.set()

    build_agent(
        AgentSettings("i-1", "api", "test", owner="agent-1"),
        adapters,
        stop=stop,
        wait_for_wakeup=wait,
    ).run()

    [deploy] = [d for d in world.store.list_instance_deploys("api", "i-1") if d.id.endswith(".2")]
    assert store.failures == 0, "the outage did not happen"
    assert deploy.finished, f"still in {deploy.state} after {len(polls)} polls"
