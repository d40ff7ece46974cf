"""Gates through real scheduler passes: CloudWatch alarms (the memory alarms, which pass
the CloudWatch adapter's contract) and webhooks (the real HTTP adapter against a local
HTTP server), each stored in the rollout state so that a new leader carries on."""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from flotilla.adapters.http_webhooks import HttpWebhooks
from flotilla.adapters.memory_alarms import MemoryAlarms
from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.engine.clock import FakeClock
from flotilla.engine.ports import AlarmState
from flotilla.engine.records import (
    FailureAction,
    RolloutPolicy,
    RolloutStatus,
    RolloutStep,
    Service,
)
from flotilla.engine.updates import set_weights
from flotilla.scheduler.gates import GATE_RETRY, GateReaders, read_alarms
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from flotilla.scheduler.rollout import plan_service
from tests.support.scheduler_world import V1, V2, FakeAgents, heartbeat, register

TTL = timedelta(minutes=5)
STEPS = (RolloutStep("1", 120), RolloutStep("100%"))


class Hook(http.server.BaseHTTPRequestHandler):
    """Answers with the server's current status and keeps what it was sent."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        server: Any = self.server
        server.received.append(json.loads(self.rfile.read(length)))
        self.send_response(server.status)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[Any]:
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.status = 500
    server.received = []
    server.url = f"http://127.0.0.1:{server.server_address[1]}/confirm"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class World:
    def __init__(self, policy: RolloutPolicy) -> None:
        self.clock = FakeClock()
        self.store = MemoryStateStore(self.clock)
        self.alarms = MemoryAlarms()
        for name in policy.alarms:
            self.alarms.set_state(name, AlarmState.OK)
        self.store.create_service(Service(name="api", rollout=policy, weights={V1: 100}))
        register(self.store, self.clock, "api", 4)
        self.agents = FakeAgents(self.store, self.clock, "api", ttl=TTL)
        self.passes = self.new_leader()
        for _ in range(3):
            self.run()
            self.agents.settle()
        assert self.service().rollout_state.status is RolloutStatus.COMPLETE

    def new_leader(self) -> SchedulerPass:
        gates = GateReaders(alarms=self.alarms, webhooks=HttpWebhooks())
        return SchedulerPass(
            self.store, self.clock, PassSettings(instance_ttl=TTL), lambda: 1, gates=gates
        )

    def run(self) -> None:
        heartbeat(self.store, self.clock, [i.id for i in self.store.list_instances("api")])
        self.passes.run()
        self.clock.advance(1)

    def service(self) -> Service:
        return self.store.get_service("api")

    def assigned(self, revision: str) -> int:
        return sum(1 for i in self.store.list_instances("api") if i.assigned_revision == revision)

    def waits(self) -> dict[str, str]:
        """What the rollout waits for, planned on what a pass reads (alarms included)."""
        inputs = self.passes._inputs(self.service())
        readings = read_alarms(GateReaders(alarms=self.alarms), inputs.service.rollout)
        inputs = dataclasses.replace(inputs, readings=readings)
        plan = plan_service(inputs, fence_lock="x", fence=1)
        return {w.kind: w.text for w in plan.waits}


@pytest.mark.parametrize("action", list(FailureAction))
def test_an_alarm_in_alarm_during_a_bake_runs_the_failure_action(action: FailureAction) -> None:
    world = World(RolloutPolicy("100%", failure_action=action, steps=STEPS, alarms=("api-5xx",)))
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.run()
    world.agents.settle()
    world.run()
    assert world.service().rollout_state.baking_since is not None
    world.alarms.set_state("api-5xx", AlarmState.ALARM)
    world.run()
    service = world.service()
    stopped = next(e for e in service.history if e.kind == "rollout_stopped")
    assert stopped.reason == "alarm api-5xx in ALARM during step 1 of 2 (1, bake 120 s), baking"
    if action is FailureAction.HOLD:
        assert service.rollout_state.status is RolloutStatus.HELD
        assert service.paused
        assert world.assigned(V2) == 1  # what runs stays
    else:
        assert service.weights == {V1: 100}
        world.run()
        world.agents.settle()
        world.run()
        assert world.assigned(V1) == 4  # reverted although the alarm still rings


def test_alarms_that_cannot_be_judged_move_nothing_and_say_why() -> None:
    world = World(RolloutPolicy("100%", alarms=("api-5xx", "gone")))
    world.alarms.delete("gone")
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.run()
    assert world.assigned(V2) == 0
    assert "alarm gone does not exist in CloudWatch" in world.waits()["alarms"]
    world.alarms.set_state("gone", AlarmState.INSUFFICIENT_DATA)
    world.run()
    assert world.assigned(V2) == 4


def test_a_webhook_answering_500_holds_the_step_with_its_reason_until_it_answers_2xx(
    hook: Any,
) -> None:
    world = World(RolloutPolicy("100%", steps=STEPS, webhooks=(hook.url,)))
    set_weights(world.store, "api", {V1: 0, V2: 100})
    world.run()
    assert world.assigned(V2) == 0
    assert len(hook.received) == 1
    sent = hook.received[0]
    assert sent["kind"] == "confirm_step"
    assert sent["step"] == {"index": 1, "of": 2, "amount": "1", "bake_seconds": 120}
    gate = world.waits()["gate"]
    assert f"webhook {hook.url} answered 500" in gate
    assert "flotilla rollout promote api" in gate
    for _ in range(5):  # not called again before GATE_RETRY
        world.run()
    assert len(hook.received) == 1
    world.passes = world.new_leader()  # the closed gate is stored: a new leader waits too
    world.run()
    assert len(hook.received) == 1
    hook.status = 204
    world.clock.advance(GATE_RETRY.total_seconds())
    world.run()
    assert len(hook.received) == 2
    assert world.assigned(V2) == 1
    world.passes = world.new_leader()
    world.run()
    assert len(hook.received) == 2  # a passed gate is not called again
