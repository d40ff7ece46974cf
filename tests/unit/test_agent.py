"""The agent loop: resume first, deploy new assignments once, stand by for another agent."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

from flotilla.cli.agent_assembly import build_agent
from flotilla.engine import units
from flotilla.engine.checkpoint import Outcome
from flotilla.engine.deploy.agent import Agent, AgentSettings
from flotilla.engine.errors import TransientError
from flotilla.engine.liveness import expiry_for
from flotilla.engine.records import AgentClaim, Instance
from tests.support.cluster import BROKEN, Cluster


def run_agent(
    cluster: Cluster,
    owner: str = "agent-a",
    iterations: int = 3,
    on_registered: Callable[[Instance], None] | None = None,
) -> Agent:
    stop = threading.Event()
    left = [iterations]

    def wait(seconds: float) -> None:
        cluster.clock.advance(seconds)
        left[0] -= 1
        if left[0] <= 0:
            stop.set()

    agent = build_agent(
        AgentSettings(instance_id="i-1", service="api", agent_version="test", owner=owner),
        cluster.adapters("i-1"),
        stop=stop,
        wait_for_wakeup=wait,
        on_registered=on_registered,
    )
    agent.run()
    return agent


class Crash(BaseException):
    pass


def test_the_agent_registers_and_deploys_its_assignment(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    run_agent(cluster)
    instance = cluster.store.get_instance("api", "i-1")
    assert instance.current_revision == v1.id
    assert instance.agent_version == "test"
    assert cluster.store.get_instance("api", "i-1").agent_owner is None  # released on stop


def test_an_interrupted_deploy_is_resumed_before_anything_else(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)

    def crash(point: str, state: str) -> None:
        if (point, state) == ("before-step", "draining"):
            raise Crash

    with pytest.raises(Crash):
        cluster.deploy("i-1", fault=crash)
    run_agent(cluster)
    (deploy,) = cluster.store.list_instance_deploys("api", "i-1")
    assert deploy.outcome is Outcome.SUCCEEDED
    assert [t.state for t in deploy.history if t.resumed] == ["draining"]


def test_a_rolled_back_assignment_is_not_tried_again(cluster: Cluster) -> None:
    v1, bad = cluster.revision("v1"), cluster.revision("bad", unit=BROKEN)
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    run_agent(cluster)
    cluster.assign("i-1", bad)
    created: list[str] = []
    stop = threading.Event()
    left = [6]

    def wait(seconds: float) -> None:
        cluster.clock.advance(seconds)
        left[0] -= 1
        if left[0] <= 0:
            stop.set()

    agent = build_agent(
        AgentSettings(instance_id="i-1", service="api", agent_version="test", owner="a"),
        cluster.adapters("i-1"),
        stop=stop,
        wait_for_wakeup=wait,
    )
    original_create = agent.runner.create

    def counting_create(*args, **kwargs):  # type: ignore[no-untyped-def]
        checkpoint = original_create(*args, **kwargs)
        created.append(checkpoint.id)
        return checkpoint

    agent.runner.create = counting_create  # type: ignore[method-assign]
    agent.run()
    assert len(created) == 1  # six iterations, one attempt
    deploys = cluster.store.list_instance_deploys("api", "i-1")
    assert deploys[-1].outcome is Outcome.ROLLED_BACK
    runtime = cluster.runtime("i-1")
    assert runtime.owned_units() == [units.installed_name("app.service", v1.id)]


def test_a_second_agent_stands_by_while_the_first_holds_the_instance(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    now = cluster.clock.now()
    cluster.store.register_instance(
        Instance("i-1", "api", "test", now, now),
        expires_at=expiry_for(now),
        claim=AgentClaim("agent-a", now + timedelta(minutes=10)),
    )
    run_agent(cluster, owner="agent-b")
    assert cluster.store.get_instance("api", "i-1").agent_owner == "agent-a"
    assert cluster.store.get_instance("api", "i-1").current_revision is None
    assert cluster.store.list_instance_deploys("api", "i-1") == []


def test_units_lost_in_a_reboot_are_started_again(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    run_agent(cluster)
    runtime = cluster.runtime("i-1")
    owned = runtime.owned_units()
    runtime.stop(owned)
    runtime.remove(owned)  # what a reboot does to units and files on tmpfs
    assert runtime.owned_units() == []
    run_agent(cluster)
    name = units.installed_name("app.service", v1.id)
    assert runtime.owned_units() == [name]
    assert [s.active_state for s in runtime.status([name])] == ["active"]
    assert len(cluster.store.list_instance_deploys("api", "i-1")) == 1  # no new deploy was needed


def test_registration_is_reported_once_before_an_interrupted_deploy_resumes(
    cluster: Cluster,
) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)

    def crash(point: str, state: str) -> None:
        if (point, state) == ("before-step", "draining"):
            raise Crash

    with pytest.raises(Crash):
        cluster.deploy("i-1", fault=crash)
    now = cluster.clock.now()  # as left by an older agent, to see this one register
    cluster.store.register_instance(
        Instance("i-1", "api", "old", now, now), expires_at=expiry_for(now)
    )
    seen: list[tuple[Instance, str, str | None]] = []

    def registered(instance: Instance) -> None:
        # What the store holds at the moment the agent says it is up.
        (deploy,) = cluster.store.list_instance_deploys("api", "i-1")
        seen.append(
            (instance, deploy.state, cluster.store.get_instance("api", "i-1").agent_version)
        )

    run_agent(cluster, iterations=5, on_registered=registered)
    ((instance, deploy_state, agent_version),) = seen  # once, over five iterations
    assert (instance.id, instance.service) == ("i-1", "api")
    assert agent_version == "test"  # registered by this agent: stored before the report
    assert deploy_state == "draining"  # not resumed yet
    (deploy,) = cluster.store.list_instance_deploys("api", "i-1")
    assert deploy.outcome is Outcome.SUCCEEDED  # and resumed after it


def test_no_registration_is_reported_while_registering_fails(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []

    def unreachable(instance: Instance, **_: object) -> None:
        attempts.append(instance.id)
        raise TransientError("DynamoDB unreachable (test)")

    monkeypatch.setattr(cluster.store, "register_instance", unreachable)
    seen: list[Instance] = []
    run_agent(cluster, iterations=4, on_registered=seen.append)
    assert attempts == ["i-1"] * 4  # it kept trying, every iteration
    assert seen == []


class CountingStore:
    """The cluster's store, counting the writes an agent makes."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> object:
        method = getattr(self.inner, name)
        if name.startswith(("register", "record", "set_", "update", "create", "release")):

            def counted(*args: object, **kwargs: object) -> object:
                self.writes.append(name)
                return method(*args, **kwargs)

            return counted
        return method


def test_an_idle_agent_writes_once_per_third_of_its_hold_and_that_write_is_its_heartbeat(
    cluster: Cluster,
) -> None:
    cluster.instance("i-1")
    counting = CountingStore(cluster.store)
    cluster.store = counting  # type: ignore[assignment]
    lease = timedelta(minutes=9)
    stop = threading.Event()
    started = cluster.clock.now()

    def wait(seconds: float) -> None:
        cluster.clock.advance(seconds)
        if cluster.clock.now() - started > timedelta(minutes=30, seconds=5):
            stop.set()

    build_agent(
        AgentSettings("i-1", "api", "test", owner="agent-a", agent_lease=lease),
        cluster.adapters("i-1"),
        stop=stop,
        wait_for_wakeup=wait,
    ).run()
    heartbeats = counting.writes.count("record_heartbeat")
    assert counting.writes[0] == "register_instance"
    assert counting.writes[-1] == "release_instance"
    assert heartbeats == 10  # 30 minutes, one every 3 minutes (a third of 9), none more
    assert len(counting.writes) == heartbeats + 2
    stored = cluster.store.get_instance("api", "i-1")
    assert stored.heartbeat_at >= started + timedelta(minutes=29, seconds=50) - lease / 3


def test_a_successor_takes_over_at_once_from_a_predecessor_proven_dead(cluster: Cluster) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    now = cluster.clock.now()
    cluster.store.register_instance(  # the predecessor, SIGKILLed: its hold runs 9 minutes
        Instance("i-1", "api", "test", now, now),
        expires_at=expiry_for(now),
        claim=AgentClaim("dead-agent", now + timedelta(minutes=9)),
    )
    stop = threading.Event()

    def wait(seconds: float) -> None:
        cluster.clock.advance(seconds)
        stop.set()

    adapters = cluster.adapters("i-1")
    checked: list[str] = []

    def proven_dead(identity: str) -> bool:
        checked.append(identity)
        return identity == "dead-agent"

    build_agent(
        AgentSettings("i-1", "api", "test", owner="successor"),
        type(adapters)(**{**vars(adapters), "proven_dead": proven_dead}),
        stop=stop,
        wait_for_wakeup=wait,
    ).run()
    assert checked == ["dead-agent"]
    assert cluster.store.get_instance("api", "i-1").current_revision == v1.id  # deployed at once
    assert cluster.clock.now() - now < timedelta(minutes=9)  # not after its hold ran out


def test_an_instance_removed_while_its_agent_was_away_is_registered_again(
    cluster: Cluster,
) -> None:
    cluster.instance("i-1")
    stop = threading.Event()
    polls = [0]

    def wait(seconds: float) -> None:
        cluster.clock.advance(seconds)
        polls[0] += 1
        if polls[0] == 2:
            cluster.store.delete_instance("api", "i-1")  # the scheduler took it for dead
        if polls[0] >= 60:
            stop.set()

    build_agent(
        AgentSettings("i-1", "api", "test", owner="agent-a", agent_lease=timedelta(minutes=3)),
        cluster.adapters("i-1"),
        stop=stop,
        wait_for_wakeup=wait,
    ).run()
    assert cluster.store.get_instance("api", "i-1").service == "api"


def test_an_agent_whose_service_was_deleted_says_so_once_and_idles(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    run_agent(cluster)
    # An older CLI deleted the record at once; the instance still runs v1, and a new
    # assignment (written before the deletion) is waiting.
    cluster.assign("i-1", cluster.revision("v2"))
    cluster.store.delete_service("api", expected_version=cluster.store.get_service("api").version)
    with caplog.at_level(logging.INFO, logger="flotilla.engine.deploy.agent"):
        run_agent(cluster, iterations=5)
    gone = [r for r in caplog.records if "no longer exists" in r.getMessage()]
    assert len(gone) == 1, [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if "iteration failed" in r.getMessage()]
    # Only a deploy changes units: v1 keeps running, and the instance was released on stop.
    assert cluster.runtime("i-1").owned_units() == [units.installed_name("app.service", v1.id)]
    instance = cluster.store.get_instance("api", "i-1")
    assert (instance.current_revision, instance.agent_owner) == (v1.id, None)
