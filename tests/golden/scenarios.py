"""Deploys stopped in every state, as golden checkpoints are recorded and replayed.

A scenario builds a small cluster (tests/support/cluster.py: memory store and locks, real
processes as units, a fake clock), deploys `v1`, assigns the next revision and runs that
deploy until a crash just before the step of one state. What the store then holds is the
checkpoint as this version writes it there; `record.py` saves it, and the replay test
(tests/unit/test_golden_checkpoints.py) rebuilds the same world, puts the saved checkpoint
in place of the one the current code wrote, and lets the current runner finish it.

Every step state of the machine is covered by at least one scenario, and the replay test
checks that: a new state needs a new golden checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.engine.checkpoint import Outcome
from flotilla.machines.deploy import State
from tests.support.cluster import BROKEN, Cluster

GOLDEN = Path(__file__).parent / "checkpoints"
INSTANCE = "i-1"


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


@dataclass(frozen=True)
class Scenario:
    name: str
    with_load_balancer: bool
    target: str  # "v2", or "broken" (its unit exits at once)
    never_healthy: bool  # the load balancer never passes the instance (rollback fails too)
    outcome: Outcome  # how the deploy ends once resumed
    crash_states: tuple[str, ...]  # the states a checkpoint is recorded in

    def world(self, root: Path) -> Cluster:
        """The cluster with v1 deployed and the scenario's target assigned."""
        cluster = Cluster(root, with_load_balancer=self.with_load_balancer)
        v1 = cluster.revision("v1")
        broken = self.target == "broken"
        target = cluster.revision(self.target, unit=BROKEN) if broken else cluster.revision("v2")
        cluster.instance(INSTANCE)
        cluster.assign(INSTANCE, v1)
        cluster.deploy(INSTANCE)
        if self.never_healthy:
            cluster.lb.never_healthy(INSTANCE)
        cluster.assign(INSTANCE, target)
        return cluster

    def stop_in(self, cluster: Cluster, state: str) -> str:
        """Run the target's deploy until just before `state`'s step; its id."""

        def crash(point: str, at: str) -> None:
            if (at, point) == (state, "before-step"):
                raise Crash

        try:
            cluster.deploy(INSTANCE, fault=crash)
        except Crash:
            instance = cluster.store.get_instance(INSTANCE)
            return f"{INSTANCE}.{instance.assignment_version}"
        raise AssertionError(f"scenario {self.name} never reached {state}")


_HAPPY = (
    State.PENDING,
    State.LOCKING,
    State.DEREGISTERING,
    State.DRAINING,
    State.STOPPING,
    State.STARTING,
    State.REGISTERING,
    State.HEALTHY,
    State.UNLOCKED,
)

SCENARIOS = (
    Scenario("upgrade", True, "v2", False, Outcome.SUCCEEDED, _HAPPY),
    Scenario("upgrade-without-lb", False, "v2", False, Outcome.SUCCEEDED, _HAPPY),
    Scenario(
        "broken",
        True,
        "broken",
        False,
        Outcome.ROLLED_BACK,
        (State.FAILED, State.ROLLING_BACK, State.UNLOCKED),
    ),
    Scenario("unhealthy", True, "v2", True, Outcome.FAILED, (State.UNLOCKED,)),
)


def fixture_path(version_dir: str, scenario: Scenario, state: str) -> Path:
    return GOLDEN / version_dir / f"{scenario.name}-{state}.json"


def save(path: Path, item: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(item, indent=1, sort_keys=True) + "\n")


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
