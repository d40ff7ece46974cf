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
    assert cluster.store.get_instance("i-1").current_revision is None
    assert cluster.store.get_deploy(planted.id) == planted  # left untouched, as evidence
    assert cluster.store.list_instance_deploys("i-1") in ([planted], [])
    assert cluster.locks.holders("deploy/api") == []  # no slot of the rollout taken
    assert cluster.store.get_service("api") == service_before  # the rollout is unaffected
    wrong = {"service": "service", "instance_id": "instance_id", "to_revision": "to_revision"}
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(messages) == 1  # reported once, not at every iteration
    # Found at start (resume) when it names this service and instance, else when adopted.
    verb = "resume" if forged_field == "to_revision" else "adopt"
    assert f"refusing to {verb} deploy checkpoint {planted.id!r}" in messages[0]
    assert f"its {wrong[forged_field]} is" in messages[0]
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
    assert cluster.store.get_instance("i-1").current_revision == v2.id
    assert installed(cluster) == [units.installed_name("app.service", v2.id)]


def test_an_in_flight_checkpoint_of_another_service_is_not_resumed(
    cluster: Cluster, spans: InMemorySpanExporter
) -> None:
    """At start the agent resumes its unfinished deploys: a planted one of another service
    under its instance's name is refused instead."""
    billing = other_service(cluster)
    cluster.instance("i-1")
    planted = plant(cluster, "i-1.7", service="billing", to_revision=billing.id)
    run_agent(cluster)
    assert installed(cluster) == []
    assert cluster.store.get_deploy(planted.id) == planted
    (refused,) = refusals(spans)
    assert "its service is 'billing', not 'api'" in refused


def test_a_forged_instance_item_of_another_service_is_refused(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = cluster.revision("v1")
    billing = other_service(cluster)
    cluster.instance("i-1")
    cluster.assign("i-1", v1)

    def forge(iteration: int) -> None:
        if iteration == 1:  # between heartbeats: the item now claims another service
            item = cluster.store._instances["i-1"]
            item.update(service="billing", assigned_revision=billing.id)
            item["assignment_version"] += 1

    with caplog.at_level(logging.ERROR):
        run_agent(cluster, iterations=4, between=forge)
    assert installed(cluster) == [units.installed_name("app.service", v1.id)]
    assert cluster.store.get_instance("i-1").current_revision == v1.id
    assert [d.to_revision for d in cluster.store.list_instance_deploys("i-1")] == [v1.id]
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "refusing the instance item 'i-1': its service is 'billing', not 'api'" in message


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

    (_, deploy) = sorted(cluster.store.list_instance_deploys("i-1"), key=lambda d: d.created_at)
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
    assert cluster.store.get_instance("i-1").current_revision == v1.id
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
    planted = plant(cluster, "i-1.0", to_revision=v2.id)
    run_agent(cluster)
    assert installed(cluster) == [units.installed_name("app.service", v1.id)]
    assert cluster.store.get_deploy(planted.id) == planted
    (refused,) = refusals(spans)
    assert "the instance runs" in refused
    assert "neither of its revisions" in refused
