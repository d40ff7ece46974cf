"""Nothing adopted blindly (issue 14): an agent given items it did not write deploys nothing.

The attacks, as a worker of another service (or anyone who can write the tables) would
mount them: a pre-planted deploy id `<instance>.<assignment_version>` naming another
service, instance or target; a forged instance item of another service; a revision item
whose unit files are not what its id hashes. Each is refused with a clear error (logged,
and an error span), nothing reaches the unit runtime, the instance's current revision and
the service's rollout are unchanged, the forged item is left as it was, and the agent keeps
running.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from flotilla.adapters import items
from flotilla.cli.agent_assembly import build_agent
from flotilla.engine import units
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome, Transition
from flotilla.engine.deploy.agent import Agent, AgentSettings
from flotilla.engine.deploy.errors import AdoptionRefusedError
from flotilla.engine.records import Revision, Service, deploy_id_for
from flotilla.engine.revisions import build_revision
from flotilla.machines import deploy as machine
from tests.support.cluster import SLEEPER, Cluster

EVIL = "[Service]\nExecStart=/bin/sh -c 'echo owned > /tmp/flotilla-owned; sleep 600'\n"


def run_agent(
    cluster: Cluster, iterations: int = 3, between: Callable[[int], None] | None = None
) -> Agent:
    """The agent of i-1 in `api`, for a few iterations on the fake clock; `between(n)` runs
    after iteration n (an attacker writing meanwhile)."""
    stop = threading.Event()
    done = [0]

    def wait(seconds: float) -> None:
        cluster.clock.advance(seconds)
        done[0] += 1
        if between is not None:
            between(done[0])
        if done[0] >= iterations:
            stop.set()

    agent = build_agent(
        AgentSettings(instance_id="i-1", service="api", agent_version="test", owner="agent-a"),
        cluster.adapters("i-1"),
        stop=stop,
        wait_for_wakeup=wait,
    )
    agent.run()  # returns: a refusal never crashes the agent
    return agent


def other_service(cluster: Cluster) -> Revision:
    cluster.store.create_service(Service("billing"))
    revision = build_revision(
        "billing", "b1", {"app.service": EVIL}, {}, cluster.secrets, cluster.clock.now()
    )
    return cluster.store.put_revision(revision)


def plant(cluster: Cluster, deploy_id: str, **fields: str) -> DeployCheckpoint:
    """A checkpoint written by someone else under the id the agent is about to create."""
    now = cluster.clock.now()
    forged = DeployCheckpoint(
        id=deploy_id,
        service=fields.get("service", "api"),
        instance_id=fields.get("instance_id", "i-1"),
        from_revision=None,
        to_revision=fields["to_revision"],
        state=machine.INITIAL_STATE,
        machine_version=machine.MACHINE_VERSION,
        created_at=now,
        updated_at=now,
        history=(Transition(machine.INITIAL_STATE, now),),
    )
    return cluster.store.create_deploy(forged)


def untouched(cluster: Cluster, planted: DeployCheckpoint) -> bool:
    """Whether the planted checkpoint is still stored exactly as it was written (read raw:
    one whose key does not carry its service or instance is refused by the reader)."""
    return cluster.store._deploys[planted.id] == items.deploy_to_item(planted)


def installed(cluster: Cluster) -> list[str]:
    return cluster.runtime("i-1").owned_units()


def refusals(spans: InMemorySpanExporter) -> list[str]:
    return [
        str(span.status.description)
        for span in spans.get_finished_spans()
        if span.name == "deploy.refused" and span.status.status_code is StatusCode.ERROR
    ]


@pytest.mark.parametrize("forged_field", ["service", "instance_id", "to_revision"])
def test_a_pre_planted_deploy_id_is_refused_and_nothing_is_deployed(
    cluster: Cluster,
    forged_field: str,
    caplog: pytest.LogCaptureFixture,
    spans: InMemorySpanExporter,
) -> None:
    v1 = cluster.revision("v1")
    billing = other_service(cluster)
    cluster.instance("i-1")
    instance = cluster.assign("i-1", v1)
    service_before = cluster.store.get_service("api")
    forged = {"to_revision": v1.id}
    forged[forged_field] = {
        "service": "billing",
        "instance_id": "i-2",
        "to_revision": billing.id,
    }[forged_field]
    planted = plant(cluster, deploy_id_for(instance), **forged)

    with caplog.at_level(logging.ERROR):
        run_agent(cluster)

    assert installed(cluster) == []  # nothing reached the runtime
    assert cluster.store.get_instance("api", "i-1").current_revision is None
    assert untouched(cluster, planted)  # left as it was, as evidence
    assert cluster.store.list_instance_deploys("api", "i-1") in ([planted], [])
    assert cluster.locks.holders("deploy/api") == []  # no slot of the rollout taken
    assert cluster.store.get_service("api") == service_before  # the rollout is unaffected
    # A checkpoint claiming another service or instance than its key carries is refused by
    # the store's reader (adapters/items); one of this instance, by the adoption checks.
    wrong = {
        "service": "claims service 'billing' and instance 'billing/i-1' but its key is not",
        "instance_id": "claims service 'api' and instance 'api/i-2' but its key is not",
        "to_revision": "its to_revision is",
    }
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(messages) == 1  # reported once, not at every iteration
    # Found at start (resume) when it names this service and instance, else when adopted.
    verb = "resume" if forged_field == "to_revision" else "adopt"
    assert f"refusing to {verb} deploy checkpoint {planted.id!r}" in messages[0]
    assert wrong[forged_field] in messages[0]
    assert refusals(spans) == messages


def test_the_agent_deploys_the_next_assignment_after_a_refused_one(cluster: Cluster) -> None:
    v1, v2 = cluster.revision("v1"), cluster.revision("v2")
    billing = other_service(cluster)
    cluster.instance("i-1")
    instance = cluster.assign("i-1", v1)
    plant(cluster, deploy_id_for(instance), to_revision=billing.id)

    def reassign(iteration: int) -> None:
        if iteration == 1:
            cluster.assign("i-1", v2)

    run_agent(cluster, iterations=4, between=reassign)
    assert cluster.store.get_instance("api", "i-1").current_revision == v2.id
    assert installed(cluster) == [units.installed_name("app.service", v2.id)]


def test_an_in_flight_checkpoint_of_another_service_is_not_resumed(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """At start the agent resumes its unfinished deploys, found through the by-instance
    index. A worker of another service can write only keys of its own service, but it can
    put this instance's key in the index attribute: the reader refuses that checkpoint."""
    billing = other_service(cluster)
    cluster.instance("i-1")
    now = cluster.clock.now()
    forged = DeployCheckpoint(
        id="billing/i-1.7",
        service="billing",
        instance_id="i-1",
        from_revision=None,
        to_revision=billing.id,
        state=machine.INITIAL_STATE,
        machine_version=machine.MACHINE_VERSION,
        created_at=now,
        updated_at=now,
        history=(Transition(machine.INITIAL_STATE, now),),
    )
    item = items.deploy_to_item(forged) | {"instance_id": "api/i-1"}
    cluster.store._deploys[forged.id] = item
    with caplog.at_level(logging.WARNING):
        run_agent(cluster)
    assert installed(cluster) == []
    assert cluster.store._deploys[forged.id] == item  # left as it was
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "stored deploy item 'billing/i-1.7' claims service 'billing' but is indexed under "
        "instance 'api/i-1': refused" in w
        for w in warnings
    )


def test_a_forged_instance_item_is_refused(
    cluster: Cluster, caplog: pytest.LogCaptureFixture, spans: InMemorySpanExporter
) -> None:
    """Another worker of the same service (its grant reaches this service's keys) rewrites
    this instance's item to claim another service and assign that service's revision."""
    v1 = cluster.revision("v1")
    billing = other_service(cluster)
    cluster.instance("i-1")
    cluster.assign("i-1", v1)

    def forge(iteration: int) -> None:
        if iteration == 1:  # between heartbeats: the item now claims another service
            item = cluster.store._instances["api/i-1"]
            item.update(service="billing", assigned_revision=billing.id)
            item["assignment_version"] += 1

    with caplog.at_level(logging.ERROR):
        run_agent(cluster, iterations=4, between=forge)
    assert installed(cluster) == [units.installed_name("app.service", v1.id)]
    assert [d.to_revision for d in cluster.store.list_instance_deploys("api", "i-1")] == [v1.id]
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert (
        "refusing the instance item: stored instance item 'api/i-1' claims service 'billing' "
        "but its key is not 'billing/i-1'" in message
    )
    assert refusals(spans) == [message]


def test_the_runner_refuses_an_instance_of_another_service_than_the_one_given(
    cluster: Cluster,
) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    instance = dataclasses.replace(cluster.assign("i-1", v1), service="billing")
    with pytest.raises(AdoptionRefusedError, match="its service is 'billing', not 'api'"):
        cluster.runner("i-1").create(instance, cluster.service)


def test_tampered_unit_content_is_refused_before_anything_reaches_the_runtime(
    cluster: Cluster,
) -> None:
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    run_agent(cluster)
    running_before = cluster.runtime("i-1").status(installed(cluster))
    genuine = build_revision(
        "api",
        "v2",
        {"app.service": SLEEPER.replace("600", "601")},
        {},
        cluster.secrets,
        cluster.clock.now(),
    )
    # The item stored under v2's id holds other unit files than the id hashes.
    cluster.store.put_revision(dataclasses.replace(genuine, units={"app.service": EVIL}))
    cluster.assign("i-1", genuine)

    run_agent(cluster)

    (_, deploy) = sorted(
        cluster.store.list_instance_deploys("api", "i-1"), key=lambda d: d.created_at
    )
    assert deploy.outcome is Outcome.ROLLED_BACK
    assert deploy.error is not None
    assert "does not hash to it" in deploy.error
    assert "refusing revision" in deploy.error
    failed_in = next(t.state for t in deploy.history if t.error)
    # Checked in `locking`, where the deploy decides which units change (issue 15): before
    # the instance even left the load balancer, let alone stopped its units.
    assert failed_in == "locking"
    assert installed(cluster) == [units.installed_name("app.service", v1.id)]
    assert cluster.runtime("i-1").status(installed(cluster)) == running_before  # untouched
    assert cluster.store.get_instance("api", "i-1").current_revision == v1.id
    unit_files = list(cluster.root.rglob("*"))
    assert not any(genuine.id[:12] in path.name for path in unit_files)
    assert not any(path.is_file() and b"flotilla-owned" in path.read_bytes() for path in unit_files)


def test_a_planted_in_flight_deploy_cannot_make_a_rollback_stop_what_runs(
    cluster: Cluster, spans: InMemorySpanExporter
) -> None:
    """An older deploy id of this very service and instance, from nothing to another of its
    revisions: resuming it would stop the running units. The instance runs neither of its
    ends, so it is refused."""
    v1, v2 = cluster.revision("v1"), cluster.revision("v2", env={"COLOR": "blue"})
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    run_agent(cluster)
    planted = plant(cluster, "api/i-1.0", to_revision=v2.id)
    run_agent(cluster)
    assert installed(cluster) == [units.installed_name("app.service", v1.id)]
    assert cluster.store.get_deploy(planted.id) == planted
    (refused,) = refusals(spans)
    assert "the instance runs" in refused
    assert "neither of its revisions" in refused
