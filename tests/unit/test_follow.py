"""`flotilla rollout watch` and `--wait` (cli.follow), on the memory store with a fake
clock: a watch follows a change stored as it began instead of reporting the rollout
before it, and ends with the rollout's outcome."""

from __future__ import annotations

import json
import types
from datetime import timedelta

import pytest

from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.cli import follow
from flotilla.cli.follow import watch_rollout
from flotilla.cli.progress import print_progress, read_progress
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import FlotillaError
from flotilla.engine.operations.steering import Operations
from flotilla.engine.records import Revision
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from tests.support.scheduler_world import V1, V2, FakeAgents, make_service, register


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStateStore(self.clock)
        make_service(self.store, "api", {V1: 100}, max_in_flight="2")
        for revision, label in ((V1, "v1"), (V2, "v2")):
            self.store.put_revision(Revision("api", revision, label, {}, None, self.clock.now()))
        register(self.store, self.clock, "api", 2)
        self.agents = FakeAgents(self.store, self.clock, "api")
        self.passes = SchedulerPass(self.store, self.clock, PassSettings(), lambda: 1)

    def settle(self) -> None:
        for _ in range(6):
            self.passes.run()
            self.agents.settle()
        self.passes.run()

    def heartbeat(self, instance_id: str) -> None:
        now = self.clock.now()
        self.store.record_heartbeat("api", instance_id, now, now + timedelta(days=1))

    def progress_text(self, capsys: pytest.CaptureFixture[str]) -> str:
        print_progress(read_progress(self.store, self.store.get_service("api"), self.clock.now()))
        return capsys.readouterr().out


@pytest.fixture
def world() -> World:
    return World()


class _NoEvents:
    def send(self, event: object) -> None:
        return None


def _wiring(world: World) -> object:
    return types.SimpleNamespace(
        store=world.store, clock=world.clock, settings=types.SimpleNamespace(environment="test")
    )


def test_a_watch_follows_weights_stored_as_it_began(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.settle()  # complete on v1: a watch begun now would once have ended at once
    operations = Operations(world.store, _NoEvents(), world.clock)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:  # the weights change lands just after the first read
            operations.set_weights(world.store.get_service("api"), [("v1", 0), ("v2", 100)])
            return
        world.passes.run()
        world.agents.settle()

    watch_rollout(_wiring(world), "api", interval=2, timeout=600, output="json", sleep=sleep)  # type: ignore[arg-type]
    assert sleeps[0] == follow.PICKUP_GRACE
    assert len(sleeps) > 2
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {i["current_revision"]["label"] for i in last["instances"]} == {"v2"}


def test_a_watch_of_a_complete_rollout_ends_after_one_more_look(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.settle()
    sleeps: list[float] = []
    watch_rollout(
        _wiring(world), "api", interval=5, timeout=600, output="text", sleep=sleeps.append
    )  # type: ignore[arg-type]
    assert sleeps == [follow.PICKUP_GRACE]
    assert capsys.readouterr().out.count("rollout of api complete") == 1
    # A caller that stored the change itself (--wait) needs no second look.
    sleeps.clear()
    watch_rollout(
        _wiring(world), "api", interval=5, timeout=600, output="text", sleep=sleeps.append,  # type: ignore[arg-type]
        changed_here=True,
    )  # fmt: skip
    assert sleeps == []


def test_a_watch_of_a_service_without_instances_says_nothing_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    world = World()
    for instance in world.store.list_instances("api"):
        world.store.delete_instance("api", instance.id)
    world.settle()
    watch_rollout(
        _wiring(world), "api", interval=1, timeout=10, output="text", sleep=lambda _s: None
    )  # type: ignore[arg-type]
    assert (
        "note: api has no live instance, so nothing runs these weights" in capsys.readouterr().err
    )


def test_a_watch_of_a_stopped_rollout_fails(world: World) -> None:
    world.settle()
    world.agents.fails = lambda _deploy: True
    Operations(world.store, _NoEvents(), world.clock).set_weights(
        world.store.get_service("api"), [("v2", 100), ("v1", 0)]
    )

    def sleep(_seconds: float) -> None:
        world.passes.run()
        world.agents.settle()

    with pytest.raises(FlotillaError, match=r"stopped and reverted|stopped"):
        watch_rollout(_wiring(world), "api", interval=1, timeout=600, output="json", sleep=sleep)  # type: ignore[arg-type]
