"""An agent killed at random points over 100 deploys, and restarted each time.

In process: the runner's fault hook raises `Crash` (a BaseException, like SIGKILL) at a
random (state, point), then a fresh runner, as a restarted agent would, resumes the
deploy. The existing crash tests kill once at each point (tests/unit/test_runner.py,
tests/integration/test_agent_crash*.py); this one kills repeatedly, at random, during
upgrades and during rollbacks (every seventh revision has a unit that exits at once),
sometimes coming back only after the deploy lock's lease lapsed. The seed is printed;
FLOTILLA_FAULT_SEED replays a run.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable

import pytest

from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.deploy.steps import StepSettings
from flotilla.engine.records import Hook, Revision
from tests.faults.world import FaultWorld
from tests.support.faults import Crash

pytestmark = pytest.mark.faults

DEPLOYS = 100
KILL_RATE = 0.08  # per fault point: about one kill per deploy on average
INSTANCES = ("i-1", "i-2", "i-3")


def seed() -> int:
    chosen = int(os.environ.get("FLOTILLA_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nFLOTILLA_FAULT_SEED={chosen}")
    return chosen


class RandomKiller:
    """A fault hook that kills at a random share of the points it is called at, at most
    `per_state` times in one state of one deploy: a third death makes the runner give up
    on the state (in `rolling_back`, the deploy ends `failed`), which the
    `test_three_deaths_in_*` tests below show deterministically."""

    def __init__(self, generator: random.Random, rate: float, per_state: int = 2) -> None:
        self.random = generator
        self.rate = rate
        self.per_state = per_state
        self.kills: Counter[tuple[str, str]] = Counter()
        self.deploy_kills: Counter[str] = Counter()  # of the current deploy, by state

    def new_deploy(self) -> None:
        self.deploy_kills.clear()

    def __call__(self, point: str, state: str) -> None:
        if self.deploy_kills[state] >= self.per_state:
            return
        if self.random.random() < self.rate:
            self.kills[(state, point)] += 1
            self.deploy_kills[state] += 1
            raise Crash(f"killed at {state}/{point}")


def deploy_with_kills(
    world: FaultWorld, instance_id: str, killer: RandomKiller, generator: random.Random
) -> DeployCheckpoint:
    """Create and run the deploy of the instance's assignment, restarting after each kill."""
    for _life in range(50):
        runner = world.runner(instance_id, fault=killer)
        instance = world.store.get_instance("api", instance_id)
        service = world.store.get_service("api")
        try:
            checkpoint = runner.create(instance, service)
            return runner.run(checkpoint.id, service)
        except Crash:
            # systemd restarts the agent after a moment; sometimes (a reboot) after the
            # deploy lock's lease has lapsed.
            lapse = generator.random() < 0.1
            lease = StepSettings().lease.total_seconds()
            world.clock.advance(lease + 1 if lapse else generator.uniform(0.1, 5))
            world.heartbeat()
    raise AssertionError(f"{instance_id}: still dying after 50 restarts")


def test_an_agent_killed_at_random_points_over_100_deploys_always_converges() -> None:
    generator = random.Random(seed())
    killer = RandomKiller(generator, KILL_RATE)
    world = FaultWorld()
    good = [world.revision(f"v{n}") for n in range(1, 4)]
    bad = world.revision("bad", broken=True)
    for instance_id in INSTANCES:
        world.instance(instance_id)
    outcomes: Counter[str] = Counter()
    for number in range(DEPLOYS):
        instance_id = INSTANCES[number % len(INSTANCES)]
        target = bad if number % 7 == 6 else good[number % len(good)]
        world.assign(instance_id, target)
        killer.new_deploy()
        done = deploy_with_kills(world, instance_id, killer, generator)
        world.check_converged(done)
        outcomes[str(done.outcome)] += 1
        if done.to_revision == bad.id:
            assert done.outcome is Outcome.ROLLED_BACK
            assert "exited" in (done.error or "")
    print(f"kills: {sum(killer.kills.values())} at {len(killer.kills)} points; {dict(outcomes)}")
    assert sum(killer.kills.values()) >= DEPLOYS // 2
    assert outcomes["succeeded"] + outcomes["rolled_back"] == DEPLOYS
    assert world.locks.holders("deploy/api") == []
    assert world.lb.registered() == set(INSTANCES)


def test_random_kills_in_deploys_with_hooks_converge_and_a_failing_validate_rolls_back() -> None:
    """The same, with every revision carrying all three hooks and every fifth one a
    `validate` that fails: kills land before and after hooks ran, and each deploy still
    ends with its hooks' last runs recorded."""
    generator = random.Random(seed())
    killer = RandomKiller(generator, KILL_RATE)
    world = FaultWorld()
    ok = {name: Hook("exit 0\n", 30) for name in ("before-stop", "after-start", "validate")}
    good = [world.revision(f"h{n}", hooks=ok) for n in range(1, 4)]
    failing = world.revision("fails", hooks={**ok, "validate": Hook("exit 1\n", 30)})
    for instance_id in INSTANCES:
        world.instance(instance_id)
    for number in range(60):
        instance_id = INSTANCES[number % len(INSTANCES)]
        target = failing if number % 5 == 4 else good[number % len(good)]
        world.assign(instance_id, target)
        killer.new_deploy()
        done = deploy_with_kills(world, instance_id, killer, generator)
        world.check_converged(done)
        ran = [(t.state, h.hook, h.succeeded) for t in done.history for h in t.hooks]
        if done.to_revision == failing.id:
            assert done.outcome is Outcome.ROLLED_BACK
            assert "hook validate" in (done.error or "")
            assert ("healthy", "validate", False) in ran
        else:
            assert done.outcome is Outcome.SUCCEEDED, done.error
            last = {state: (hook, passed) for state, hook, passed in ran}
            assert last["stopping"] == ("before-stop", True)
            assert last["starting"] == ("after-start", True)
            assert last["healthy"] == ("validate", True)
    assert sum(killer.kills.values()) >= 20
    assert world.locks.holders("deploy/api") == []


def kill_at(*deaths: tuple[str, str]) -> Callable[[str, str], None]:
    """A fault hook that kills at each (state, point) given, in order, once each."""
    left = list(deaths)

    def hook(point: str, state: str) -> None:
        if left and left[0] == (state, point):
            left.pop(0)
            raise Crash(f"killed at {state}/{point}")

    return hook


def upgraded(world: FaultWorld, *instance_ids: str) -> Revision:
    """Instances running v1 and assigned v2; returns v2."""
    v1, v2 = world.revision("v1"), world.revision("v2")
    for instance_id in instance_ids:
        world.instance(instance_id)
        world.assign(instance_id, v1)
        runner = world.runner(instance_id)
        runner.run(
            runner.create(world.store.get_instance("api", instance_id), world.service).id,
            world.service,
        )
        world.assign(instance_id, v2)
    return v2


def die_repeatedly(world: FaultWorld, instance_id: str, *deaths: tuple[str, str]) -> str:
    """Run the deploy of the instance's assignment, killing it at each death in turn."""
    deploy_id = ""
    for death in deaths:
        runner = world.runner(instance_id, fault=kill_at(death))
        deploy_id = runner.create(world.store.get_instance("api", instance_id), world.service).id
        with pytest.raises(Crash):
            runner.run(deploy_id, world.service)
        world.clock.advance(2)
    return deploy_id


def test_three_deaths_in_unlocked_still_let_the_deploy_finish() -> None:
    world = FaultWorld()
    upgraded(world, "i-1")
    deploy_id = die_repeatedly(world, "i-1", *[("unlocked", "before-step")] * 3)

    done = world.runner("i-1").run(deploy_id, world.service)

    world.check_converged(done)


def test_three_deaths_in_locking_leave_no_slot_held_by_the_finished_deploy() -> None:
    world = FaultWorld()
    upgraded(world, "i-1")
    deaths = [("locking", "before-step"), ("locking", "before-step"), ("locking", "after-effect")]
    deploy_id = die_repeatedly(world, "i-1", *deaths)

    done = world.runner("i-1").run(deploy_id, world.service)

    assert done.outcome is Outcome.ROLLED_BACK
    assert "giving up" in (done.error or "")
    assert world.locks.holders("deploy/api") == []


def test_a_deploy_resumed_after_its_lease_lapsed_takes_a_slot_before_it_goes_on() -> None:
    """With max_in_flight 1, a deploy whose agent was down longer than its lease must not
    leave the load balancer while another deploy holds the only slot."""
    world = FaultWorld(max_in_flight="1")
    upgraded(world, "i-1", "i-2")
    # i-1 takes the slot and its agent dies before deregistering; it stays down (a reboot)
    # longer than the lease.
    first = die_repeatedly(world, "i-1", ("deregistering", "before-step"))
    world.clock.advance(StepSettings().lease.total_seconds() + 1)
    world.heartbeat()
    # Meanwhile i-2 takes the free slot, and is draining when its agent dies too.
    die_repeatedly(world, "i-2", ("draining", "before-step"))
    assert "i-2" not in world.lb.registered()
    (held,) = world.locks.holders("deploy/api")
    deregistered: list[tuple[object, list[str]]] = []

    def look(point: str, state: str) -> None:
        if (state, point) == ("deregistering", "after-effect"):
            owners = [lease.owner for lease in world.locks.holders("deploy/api")]
            deregistered.append((world.clock.now(), owners))

    done = world.runner("i-1", fault=look).run(first, world.service)

    # i-1 waited for the slot: it left the load balancer only once i-2's lease had lapsed,
    # holding the slot alone.
    ((left_at, owners),) = deregistered
    assert owners == [first]
    assert left_at >= held.expires_at
    assert done.outcome is Outcome.SUCCEEDED
    assert world.locks.holders("deploy/api") == []
