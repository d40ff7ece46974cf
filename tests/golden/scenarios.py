"""Deploys stopped in every state, as golden checkpoints are recorded and replayed.

A scenario builds a small cluster (tests/support/cluster.py: memory store and locks, real
processes as units, a fake clock), deploys `v1`, assigns the next revision and runs that
deploy until a crash just before the step of one state. What the store then holds is the
checkpoint as this version writes it there; `record.py` saves it, and the replay test
(tests/unit/test_golden_checkpoints.py) rebuilds the same world, puts the saved checkpoint
in place of the one the current code wrote, and lets the current runner finish it.

Every step state of the machine is covered by at least one scenario, and the replay test
checks that: a new state needs a new golden checkpoint. A scenario added with a later
machine version (`since`) is recorded in that version's folder and the ones after it.

The `upgrade` scenarios assign a revision with the same content as `v1`, which is the same
revision (ids are content hashes): from machine version 2 on, nothing changes, and the
load-balancer states are skipped. `change` replaces the unit (drained and restarted) and
`unassign` assigns no revision (deregistered, stopped and removed). `hooks` changes the unit
and has the three lifecycle hooks (machine version 3: each run kept in the history), and
`hooks-validate-fails` has a `validate` that exits 1, so the deploy rolls back.

The `container` scenarios run a container unit (the shorthand's image line, with a command
the process runtime can run) on the memory image registry, whose tag moves before the
target is assigned: their checkpoints record the digests pinned in `locking`. They are in
`machine-v2-images/` (the checkpoint's `images` field, added within machine version 2) and
in every folder of a later machine version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flotilla.adapters.memory_images import MemoryImages
from flotilla.engine.checkpoint import Outcome
from flotilla.engine.records import Hook, deploy_id_for
from flotilla.machines.deploy import State
from tests.support.cluster import BROKEN, SLEEPER, Cluster

GOLDEN = Path(__file__).parent / "checkpoints"
INSTANCE = "i-1"
IMAGE = "127.0.0.1:5000/app:stable"
CONTAINER = f"[Service]\nEnvironment=FLOTILLA_IMAGE={IMAGE}\nExecStart=/bin/sleep 600\n"


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


@dataclass(frozen=True)
class Scenario:
    name: str
    with_load_balancer: bool
    # "v2", "broken" (its unit exits at once), "changed" (another unit), "none", "hooks"
    # (another unit, with hooks), "hooks-validate-fails" (and its `validate` exits 1)
    target: str
    never_healthy: bool  # the load balancer never passes the instance (rollback fails too)
    outcome: Outcome  # how the deploy ends once resumed
    crash_states: tuple[str, ...]  # the states a checkpoint is recorded in
    since: int = 1  # the first machine version recorded with it
    until: int | None = None  # the last, if a later version no longer meets it
    containers: bool = False  # its unit is a container unit, pinned to a digest

    def recorded_in(self, folder: str) -> bool:
        """Whether a folder (`machine-v<N>[-…]`) holds this scenario's checkpoints."""
        number, _, variant = folder.removeprefix("machine-v").partition("-")
        if variant == "images":  # recorded when checkpoints began to keep images' digests
            return self.containers
        return self.since <= int(number) <= (self.until or int(number))

    def world(self, root: Path) -> Cluster:
        """The cluster with v1 deployed and the scenario's target assigned."""
        registry = MemoryImages() if self.containers else None
        cluster = Cluster(root, with_load_balancer=self.with_load_balancer, images=registry)
        first = CONTAINER if self.containers else SLEEPER
        if registry is not None:
            registry.publish(IMAGE)
        v1 = cluster.revision("v1", unit=first)
        changed = first.replace("600", "601")
        units = {
            "broken": CONTAINER.replace("/bin/sleep 600", BROKEN.split("=", 1)[1].strip())
            if self.containers
            else BROKEN,
            "changed": changed,
            "hooks": changed,
            "hooks-validate-fails": changed,
        }
        # Fixed scripts: the revision ids in the recorded checkpoints must come out again.
        hooks = {
            "hooks": {name: Hook("exit 0\n", 30) for name in HOOK_SCRIPTS},
            "hooks-validate-fails": {
                **{name: Hook("exit 0\n", 30) for name in HOOK_SCRIPTS},
                "validate": Hook("exit 1\n", 30),
            },
        }
        cluster.instance(INSTANCE)
        cluster.assign(INSTANCE, v1)
        cluster.deploy(INSTANCE)
        if self.never_healthy:
            cluster.lb.never_healthy(INSTANCE)
        if self.target == "none":
            current = cluster.store.get_instance("api", INSTANCE)
            cluster.store.set_assignment(
                "api", INSTANCE, None, expected_version=current.assignment_version
            )
        else:
            if registry is not None:
                registry.publish(IMAGE)  # the tag moves: the target pins the new digest
            target = cluster.revision(
                self.target, unit=units.get(self.target, first), hooks=hooks.get(self.target)
            )
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
            instance = cluster.store.get_instance("api", INSTANCE)
            return deploy_id_for(instance)
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

HOOK_SCRIPTS = ("before-stop", "after-start", "validate")

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
    # Until version 2 this redeploy of the same revision (nothing changes) left the
    # load balancer; since then it stays in service: `unhealthy-change` takes its place.
    Scenario("unhealthy", True, "v2", True, Outcome.FAILED, (State.UNLOCKED,), until=1),
    Scenario("unhealthy-change", True, "changed", True, Outcome.FAILED, (State.UNLOCKED,), since=2),
    Scenario("change", True, "changed", False, Outcome.SUCCEEDED, _HAPPY[1:], since=2),
    Scenario("unassign", True, "none", False, Outcome.SUCCEEDED, _HAPPY[1:], since=2),
    Scenario("unassign-without-lb", False, "none", False, Outcome.SUCCEEDED, _HAPPY[1:], since=2),
    Scenario("hooks", True, "hooks", False, Outcome.SUCCEEDED, _HAPPY[1:], since=3),
    Scenario(
        "hooks-validate-fails",
        True,
        "hooks-validate-fails",
        False,
        Outcome.ROLLED_BACK,
        (State.FAILED, State.ROLLING_BACK, State.UNLOCKED),
        since=3,
    ),
    # Recorded in machine-v2-images/ and from machine version 3 on (see the docstring).
    Scenario(
        "container-change",
        True,
        "changed",
        False,
        Outcome.SUCCEEDED,
        _HAPPY[1:],
        since=3,
        containers=True,
    ),
    Scenario(
        "container-broken",
        True,
        "broken",
        False,
        Outcome.ROLLED_BACK,
        (State.FAILED, State.ROLLING_BACK, State.UNLOCKED),
        since=3,
        containers=True,
    ),
)


def fixture_path(version_dir: str, scenario: Scenario, state: str) -> Path:
    return GOLDEN / version_dir / f"{scenario.name}-{state}.json"


def save(path: Path, item: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(item, indent=1, sort_keys=True) + "\n")


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
