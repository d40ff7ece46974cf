"""Scale simulation: one rollout over hundreds and thousands of simulated instances.

The real scheduler and real agents with their deploy runners, on in-memory adapters and
one simulated clock (tests/simulation/world.py). The rollout must complete with every
deploy succeeded, never have more than `max_in_flight` instances out of the load balancer
at once, and leave every instance in service, running only the new revision, and no lock
held. The figures (simulated time, store calls) are printed; docs/figures.md has them.
The 10 000-instance run takes several minutes: it is in scripts/simulate-rollout only.
"""

from __future__ import annotations

import pytest

from tests.simulation.world import SimResult, SimSettings, run_rollout


def check(result: SimResult) -> None:
    settings = result.settings
    print(
        f"\n{settings.instances} instances, {result.slots} in flight: rollout "
        f"{result.rollout_seconds:.0f} s simulated (ideal {result.ideal_seconds:.0f} s), "
        f"max out of service {result.max_out_of_service}, store calls "
        f"{sum(result.rollout_store_calls.values())}, lock calls "
        f"{sum(result.rollout_lock_calls.values())}, {result.wall_seconds:.1f} s wall"
    )
    assert result.deploys == settings.instances
    assert result.outcomes == {"succeeded": settings.instances}
    assert 0 < result.max_out_of_service <= result.slots
    assert result.extra["registered_at_end"] == settings.instances, "an instance stayed out"
    assert result.extra["deploy_lock_holders_at_end"] == 0
    assert result.extra["active_v2_units"] == settings.instances
    assert result.extra["only_one_unit_each"]
    # Pacing works: within a few scheduler and agent intervals per wave of the ideal.
    waves = -(-settings.instances // result.slots)
    assert result.rollout_seconds <= result.ideal_seconds + waves * 60
    # Idle agents: an assignment read per (safety-net) poll of 60 s and a heartbeat, which
    # is also the renewal of their hold on the instance, every 3 minutes; nothing else.
    assert result.idle_agent_calls_per_minute == {
        "get_instance": 1.0,
        "record_heartbeat": pytest.approx(1 / 3),
    }
    assert result.extra["wake_ups"] >= settings.instances  # every agent was rung
    # EC2 says an instance is going: out of its service within a minute (not the TTL).
    assert result.extra["left_after_seconds"] <= 60


def test_a_rollout_over_200_instances_keeps_to_max_in_flight() -> None:
    check(run_rollout(SimSettings(instances=200, max_in_flight="10%", idle_minutes=3)))


@pytest.mark.slow
def test_a_rollout_over_1000_instances_keeps_to_max_in_flight() -> None:
    check(run_rollout(SimSettings(instances=1000, max_in_flight="5%", idle_minutes=3)))
