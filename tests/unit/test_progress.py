"""What `flotilla rollout status` and `watch` show, on the memory store with a fake clock:
liveness per instance (last heard from, agent version, silent before the TTL drops it),
since when a status holds, a retired revision's bar, and a watch that follows a change
stored as it began instead of reporting the rollout before it."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from flotilla.cli.progress import (
    bar,
    heartbeat_of,
    progress_json,
    read_progress,
    silence_threshold,
)
from flotilla.engine.liveness import DEFAULT_HEARTBEAT, DEFAULT_INSTANCE_TTL
from flotilla.engine.operations.steering import Operations
from flotilla.engine.records import AgentClaim, Instance
from tests.unit.test_follow import World


@pytest.fixture
def world() -> World:
    return World()


def test_a_silent_agent_is_shown_with_its_last_heartbeat_before_the_ttl(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.settle()
    quiet = silence_threshold(DEFAULT_HEARTBEAT, DEFAULT_INSTANCE_TTL).total_seconds()
    world.clock.advance(quiet + 1)
    world.heartbeat("i-000")  # i-001's agent was SIGKILLed a while ago
    progress = read_progress(world.store, world.store.get_service("api"), world.clock.now())
    shown = progress_json(progress)
    by_id = {i["id"]: i for i in shown["instances"]}
    assert by_id["i-001"]["silent_for_seconds"] == pytest.approx(quiet + 1, abs=1)
    assert by_id["i-000"]["silent_for_seconds"] is None
    assert by_id["i-001"]["agent_version"] == "test"
    assert by_id["i-001"]["heartbeat_at"] < by_id["i-000"]["heartbeat_at"]
    assert shown["silent_instances"] == 1
    assert by_id["i-001"]["silent_after_seconds"] == quiet
    assert shown["instance_ttl_seconds"] == DEFAULT_INSTANCE_TTL.total_seconds()
    json.dumps(shown)
    text = world.progress_text(capsys)
    assert "LAST SEEN" in text
    assert "AGENT" in text
    assert f"silent for {round(quiet + 1)}s" in text
    assert "silent instances: 1 (missed two heartbeats" in text
    # Past the TTL it no longer counts at all.
    world.clock.advance(DEFAULT_INSTANCE_TTL.total_seconds())
    world.heartbeat("i-000")
    text = world.progress_text(capsys)
    assert re.search(r"dead instances: +1 \(no heartbeat for", text)
    assert "i-001" not in text


def test_the_silence_threshold_follows_each_agents_heartbeat_and_the_ttl(world: World) -> None:
    now = world.clock.now()
    # An agent that holds its instance for 3 s heartbeats every second (once a third of
    # the hold has passed): two missed heartbeats make it silent, not the default's minutes.
    quick = Instance("i-quick", "api", "test", now, now)
    world.store.register_instance(
        quick,
        expires_at=now + timedelta(days=1),
        claim=AgentClaim("pid-1", now + timedelta(seconds=3)),
    )
    world.clock.advance(2.5)
    progress = read_progress(world.store, world.store.get_service("api"), world.clock.now())
    by_id = {item.instance.id: item for item in progress.instances}
    assert heartbeat_of(by_id["i-quick"].instance) == timedelta(seconds=1)
    assert progress.silent_after(by_id["i-quick"]) == timedelta(seconds=2)
    assert progress.silent_for(by_id["i-quick"]) == timedelta(seconds=2.5)
    assert progress.silent_for(by_id["i-000"]) is None  # no hold recorded: the default
    assert progress.silent_after(by_id["i-000"]) == silence_threshold(
        DEFAULT_HEARTBEAT, DEFAULT_INSTANCE_TTL
    )
    assert progress.ttl == DEFAULT_INSTANCE_TTL
    assert silence_threshold(timedelta(seconds=30), timedelta(minutes=5)) == timedelta(minutes=1)
    # Rarer heartbeats move it with them, and it stays short of the TTL.
    assert silence_threshold(timedelta(minutes=3), timedelta(minutes=15)) == timedelta(minutes=6)
    assert silence_threshold(timedelta(minutes=4), timedelta(minutes=5)) == timedelta(minutes=2.5)


def test_a_complete_rollout_says_since_when_it_is_complete(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    started = world.clock.now()
    world.passes.run()
    world.clock.advance(95)
    world.settle()
    service = world.store.get_service("api")
    completed = [e.at for e in service.history if e.kind == "rollout_complete"][-1]
    assert completed > started
    text = world.progress_text(capsys)
    assert f"complete (since {completed:%Y-%m-%d %H:%M:%S} UTC)" in text
    assert f"began {started:%Y-%m-%d %H:%M:%S} UTC" in text


def test_a_revision_with_weight_0_is_not_drawn_full(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.settle()
    Operations(world.store, _NoEvents(), world.clock).set_weights(
        world.store.get_service("api"), [("v1", 0), ("v2", 100)]
    )
    world.settle()
    text = world.progress_text(capsys)
    assert f"v1  {bar(0, 0)}  0 running (weight 0: runs nowhere)" in text
    assert bar(0, 0) == "[" + "-" * 30 + "]"
    assert "0/0" not in text


class _NoEvents:
    def send(self, event: object) -> None:
        return None
