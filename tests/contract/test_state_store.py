"""The state store contract, run against memory, moto and DynamoDB Local.

Every write several parties can race is conditional; a loser gets `ConflictError` with
the current record. Concurrency tests run on memory and DynamoDB Local only.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta

import pytest

from flotilla.adapters import items
from flotilla.engine.checkpoint import DeployCheckpoint, LeaseRef, Outcome, Transition, UnitPlan
from flotilla.engine.errors import (
    AlreadyExistsError,
    ConflictError,
    ItemTooLargeError,
    LockLostError,
    NotFoundError,
    SchemaError,
)
from flotilla.engine.records import (
    AgentClaim,
    CurrentRevision,
    FailureAction,
    HistoryEntry,
    Instance,
    LoadBalancerKind,
    LoadBalancerRef,
    Revision,
    RolloutPolicy,
    RolloutState,
    RolloutStatus,
    Service,
)
from flotilla.engine.updates import mark_deleting, set_weights
from tests.contract.conftest import Backend

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def a_service(name: str = "api") -> Service:
    return Service(
        name=name,
        load_balancer=LoadBalancerRef(LoadBalancerKind.CLASSIC, "api-elb"),
        rollout=RolloutPolicy(
            max_in_flight="25%", max_failures=2, failure_action=FailureAction.HOLD
        ),
        weights={"a" * 64: 90, "b" * 64: 10},
    )


def a_revision(
    backend: Backend, rev_id: str = "c" * 64, units: dict[str, str] | None = None
) -> Revision:
    return Revision(
        service="api",
        id=rev_id,
        label="v1",
        units=units or {"web.service": "[Service]\nExecStart=/bin/true\n"},
        environment=None,
        created_at=backend.clock.now(),
    )


def an_instance(backend: Backend, instance_id: str = "i-1", service: str = "api") -> Instance:
    now = backend.clock.now()
    return Instance(instance_id, service, "0.1.0", registered_at=now, heartbeat_at=now)


def a_checkpoint(
    backend: Backend, deploy_id: str = "api/i-1.1", instance: str = "i-1"
) -> DeployCheckpoint:
    now = backend.clock.now()
    return DeployCheckpoint(
        id=deploy_id,
        service="api",
        instance_id=instance,
        from_revision="a" * 64,
        to_revision="b" * 64,
        state="pending",
        machine_version=1,
        created_at=now,
        updated_at=now,
        deadlines={"overall": now + HOUR},
        attempts={"locking": 1},
        lease=LeaseRef("deploy/api", 0, "i-1", 7),
        trace_parent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        history=(Transition("pending", now, now, 1),),
    )


# --- services --------------------------------------------------------------------------


def test_a_created_service_reads_back_equal_with_version_one(backend: Backend) -> None:
    created = backend.store.create_service(a_service())
    assert created.version == 1
    assert created.created_at == backend.clock.now()
    assert backend.store.get_service("api") == created
    assert backend.store.list_services() == [created]


def test_creating_a_service_twice_fails_and_keeps_the_first(backend: Backend) -> None:
    first = backend.store.create_service(a_service())
    with pytest.raises(AlreadyExistsError):
        backend.store.create_service(dataclasses.replace(a_service(), weights={}))
    assert backend.store.get_service("api") == first


def test_an_update_on_a_stale_version_conflicts_and_carries_the_current(backend: Backend) -> None:
    created = backend.store.create_service(a_service())
    first = backend.store.update_service(dataclasses.replace(created, paused=True))
    assert first.version == 2
    with pytest.raises(ConflictError) as raised:
        backend.store.update_service(dataclasses.replace(created, weights={}))
    assert raised.value.current == first
    assert backend.store.get_service("api") == first


def test_reading_or_updating_a_missing_service_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFoundError, match="'nope'"):
        backend.store.get_service("nope")
    with pytest.raises(NotFoundError):
        backend.store.update_service(a_service("nope"))
    with pytest.raises(NotFoundError):
        backend.store.delete_service("nope", expected_version=1)


def test_delete_is_conditional_on_the_version(backend: Backend) -> None:
    created = backend.store.create_service(a_service())
    updated = backend.store.update_service(created)
    with pytest.raises(ConflictError):
        backend.store.delete_service("api", expected_version=created.version)
    backend.store.delete_service("api", expected_version=updated.version)
    assert backend.store.list_services() == []


def test_a_deletion_mark_is_stored_and_a_delete_on_the_version_before_it_conflicts(
    backend: Backend,
) -> None:
    """The scheduler deletes a service being deleted on the version it planned on: a
    record that changed since (here: the mark itself, newer than the planned version) is
    not deleted, and the conflict carries the record as stored."""
    created = backend.store.create_service(a_service())
    at = backend.clock.now()
    marked = mark_deleting(backend.store, "api", at, current=created)
    assert backend.store.get_service("api") == marked
    assert marked.deleting_since == at
    assert [e.kind for e in marked.history] == ["deleting"]
    with pytest.raises(ConflictError) as raised:
        backend.store.delete_service("api", expected_version=created.version)
    assert raised.value.current == marked
    backend.store.delete_service("api", expected_version=marked.version)
    with pytest.raises(NotFoundError):
        backend.store.get_service("api")


def test_parallel_scan_segments_split_services_without_overlap(backend: Backend) -> None:
    names = {f"svc-{n}" for n in range(12)}
    for name in names:
        backend.store.create_service(a_service(name))
    seen = [{s.name for s in backend.store.list_services(segment=i, segments=3)} for i in range(3)]
    assert set().union(*seen) == names
    assert sum(len(part) for part in seen) == len(names)


def test_stored_items_carry_a_schema_number(backend: Backend) -> None:
    backend.store.create_service(a_service())
    backend.store.put_revision(a_revision(backend))
    backend.store.register_instance(an_instance(backend), expires_at=backend.clock.now() + HOUR)
    backend.store.create_deploy(a_checkpoint(backend))
    expected = {
        items.SERVICE_SCHEMA,
        items.SERVICE_SCHEMA - 2,  # a service of one region, not being deleted (items.services)
        items.REVISION_SCHEMA,
        items.INSTANCE_SCHEMA,
        items.DEPLOY_SCHEMA,
    }
    for item in backend.scan_everything():
        schema = item["schema"]
        number = int(schema["N"]) if isinstance(schema, dict) else schema
        assert number in expected


# --- revisions -------------------------------------------------------------------------


def test_revisions_are_immutable_and_putting_one_twice_is_a_no_op(backend: Backend) -> None:
    revision = a_revision(backend)
    assert backend.store.put_revision(revision) == revision
    changed = dataclasses.replace(revision, label="other")
    assert backend.store.put_revision(changed) == revision
    assert backend.store.get_revision("api", revision.id) == revision
    later = dataclasses.replace(
        a_revision(backend, "d" * 64), created_at=revision.created_at + HOUR
    )
    backend.store.put_revision(later)
    assert backend.store.list_revisions("api") == [revision, later]
    assert backend.store.list_revisions("web") == []


def test_a_revision_over_400_kb_is_refused_by_name_and_size_storing_nothing(
    backend: Backend,
) -> None:
    units = {f"u{n}.service": "[Service]\n# " + "x" * 60_000 + "\n" for n in range(8)}
    revision = a_revision(backend, "e" * 64, units=units)
    with pytest.raises(ItemTooLargeError, match=r"revision eeeeeeeeeeee of api is \d+ KB"):
        backend.store.put_revision(revision)
    assert backend.store.list_revisions("api") == []


# --- instances -------------------------------------------------------------------------


def test_registering_again_refreshes_the_heartbeat_and_keeps_the_assignment(
    backend: Backend,
) -> None:
    store = backend.store
    registered = store.register_instance(
        an_instance(backend), expires_at=backend.clock.now() + HOUR
    )
    assert (registered.assigned_revision, registered.assignment_version) == (None, 0)
    assigned = store.set_assignment("api", "i-1", "a" * 64, expected_version=0)
    assert (assigned.assigned_revision, assigned.assignment_version) == ("a" * 64, 1)
    backend.clock.advance(60)
    again = dataclasses.replace(
        an_instance(backend), agent_version="0.2.0", registered_at=backend.clock.now()
    )
    refreshed = store.register_instance(again, expires_at=backend.clock.now() + HOUR)
    assert refreshed.assigned_revision == "a" * 64
    assert refreshed.assignment_version == 1
    assert refreshed.agent_version == "0.2.0"
    assert refreshed.heartbeat_at == backend.clock.now()
    assert refreshed.registered_at == registered.registered_at


def test_a_machine_registered_in_two_services_is_two_instances(backend: Backend) -> None:
    """Keys carry the service: a machine moved to another service starts afresh there, and
    what one service reads or writes of it never touches the other's item."""
    store = backend.store
    store.register_instance(an_instance(backend), expires_at=backend.clock.now() + HOUR)
    store.set_assignment("api", "i-1", "a" * 64, expected_version=0)
    backend.clock.advance(5)
    store.register_instance(
        an_instance(backend, service="web"), expires_at=backend.clock.now() + HOUR
    )
    assert store.get_instance("api", "i-1").assigned_revision == "a" * 64
    assert store.get_instance("web", "i-1").assigned_revision is None
    assert [i.service for i in store.list_instances("web")] == ["web"]
    with pytest.raises(NotFoundError):
        store.get_instance("billing", "i-1")
    # EC2's word names the machine only: every item of it is marked, the latest returned.
    gone = store.mark_instance_left("i-1", backend.clock.now())
    assert gone.service == "web"
    assert store.get_instance("api", "i-1").left_at == backend.clock.now()


def test_an_assignment_on_a_stale_version_conflicts(backend: Backend) -> None:
    store = backend.store
    store.register_instance(an_instance(backend), expires_at=backend.clock.now() + HOUR)
    winner = store.set_assignment("api", "i-1", "a" * 64, expected_version=0)
    with pytest.raises(ConflictError) as raised:
        store.set_assignment("api", "i-1", "b" * 64, expected_version=0)
    assert raised.value.current == winner
    assert store.get_instance("api", "i-1").assigned_revision == "a" * 64
    with pytest.raises(NotFoundError):
        store.set_assignment("api", "i-404", "a" * 64, expected_version=0)


def test_heartbeats_and_current_revision_never_undo_an_assignment(backend: Backend) -> None:
    store = backend.store
    store.register_instance(an_instance(backend), expires_at=backend.clock.now() + HOUR)
    store.set_assignment("api", "i-1", "b" * 64, expected_version=0)
    backend.clock.advance(15)
    store.record_heartbeat("api", "i-1", backend.clock.now(), backend.clock.now() + HOUR)
    store.set_current_revision("api", "i-1", "a" * 64)
    stored = store.get_instance("api", "i-1")
    assert stored.assigned_revision == "b" * 64
    assert stored.current_revision == "a" * 64
    assert stored.heartbeat_at == backend.clock.now()
    with pytest.raises(NotFoundError):
        store.record_heartbeat("api", "i-404", backend.clock.now(), backend.clock.now() + HOUR)


def test_instances_are_listed_by_service_and_can_be_deleted(backend: Backend) -> None:
    store = backend.store
    for instance_id, service in [("i-2", "api"), ("i-1", "api"), ("i-3", "web")]:
        store.register_instance(
            an_instance(backend, instance_id, service), expires_at=backend.clock.now() + HOUR
        )
    assert [i.id for i in store.list_instances("api")] == ["i-1", "i-2"]
    store.delete_instance("api", "i-1")
    store.delete_instance("api", "i-1")  # idempotent
    assert [i.id for i in store.list_instances("api")] == ["i-2"]


# --- deploys ---------------------------------------------------------------------------


def test_a_checkpoint_round_trips_with_its_history(backend: Backend) -> None:
    created = backend.store.create_deploy(a_checkpoint(backend))
    assert created.version == 1
    assert backend.store.get_deploy("api/i-1.1") == created
    with pytest.raises(AlreadyExistsError):
        backend.store.create_deploy(a_checkpoint(backend))


def test_a_checkpoint_write_on_a_stale_version_conflicts(backend: Backend) -> None:
    created = backend.store.create_deploy(a_checkpoint(backend))
    now = backend.clock.now()
    advanced = backend.store.update_deploy(
        dataclasses.replace(
            created,
            state="locking",
            history=(*created.history, Transition("locking", now, None, 1)),
        )
    )
    assert advanced.version == 2
    with pytest.raises(ConflictError) as raised:
        backend.store.update_deploy(dataclasses.replace(created, state="failed"))
    assert raised.value.current == advanced
    finished = backend.store.update_deploy(
        dataclasses.replace(advanced, state="done", outcome=Outcome.SUCCEEDED)
    )
    assert backend.store.get_deploy("api/i-1.1") == finished
    assert finished.finished


def test_a_checkpoint_and_the_current_revision_are_written_together_or_not_at_all(
    backend: Backend,
) -> None:
    store = backend.store
    store.register_instance(an_instance(backend), expires_at=backend.clock.now() + HOUR)
    store.set_current_revision("api", "i-1", "a" * 64)
    created = store.create_deploy(a_checkpoint(backend))
    healthy = store.update_deploy(
        dataclasses.replace(created, state="unlocked"), current=CurrentRevision("i-1", "b" * 64)
    )
    assert store.get_deploy("api/i-1.1") == healthy
    assert store.get_instance("api", "i-1").current_revision == "b" * 64

    with pytest.raises(ConflictError) as raised:  # a stale checkpoint: neither is written
        store.update_deploy(
            dataclasses.replace(created, state="failed"), current=CurrentRevision("i-1", None)
        )
    assert raised.value.current == healthy
    assert store.get_instance("api", "i-1").current_revision == "b" * 64

    store.delete_instance("api", "i-1")
    with pytest.raises(NotFoundError):  # the instance is gone: the checkpoint stays too
        store.update_deploy(
            dataclasses.replace(healthy, state="done"), current=CurrentRevision("i-1", None)
        )
    assert store.get_deploy("api/i-1.1") == healthy

    back_to_none = store.update_deploy(dataclasses.replace(healthy, state="done"))
    assert back_to_none.version == healthy.version + 1


def test_deploys_are_listed_by_service_since_a_time_and_by_instance(backend: Backend) -> None:
    store = backend.store
    early = store.create_deploy(a_checkpoint(backend, "api/i-1.1", "i-1"))
    backend.clock.advance(3600)
    late = a_checkpoint(backend, "api/i-2.1", "i-2")
    store.create_deploy(late)
    assert [d.id for d in store.list_deploys("api")] == ["api/i-1.1", "api/i-2.1"]
    assert [d.id for d in store.list_deploys("api", since=backend.clock.now())] == ["api/i-2.1"]
    assert [d.id for d in store.list_instance_deploys("api", "i-1")] == [early.id]
    assert store.list_deploys("web") == []


def test_a_brief_listing_is_the_full_one_without_step_records_plan_or_images(
    backend: Backend,
) -> None:
    store = backend.store
    failed = dataclasses.replace(
        a_checkpoint(backend),
        state="failed",
        outcome=Outcome.FAILED,
        failed_in="starting",
        error="unit app.service failed to start",
        units=UnitPlan(
            {"app.service": "a.service"}, {"app.service": "b.service"}, ("app.service",), (), False
        ),
        images={"app.service": "registry.example/app@sha256:" + "3" * 64},
    )
    store.create_deploy(failed)
    store.create_deploy(a_checkpoint(backend, "api/i-2.1", "i-2"))
    full = store.list_deploys("api")
    brief = store.list_deploys("api", brief=True)
    assert [d.history for d in full] != [(), ()]  # there was something to leave out
    assert full[0].units is not None
    assert full[0].images is not None
    expected = [dataclasses.replace(d, history=(), units=None, images=None) for d in full]
    assert brief == expected
    assert brief[0].failed_in == "starting"  # stored in its own field, not read from history
    assert store.list_deploys("api", since=backend.clock.now(), brief=True) == expected


# --- items written by another version ----------------------------------------------


def test_an_item_from_a_newer_schema_is_refused_clearly(backend: Backend) -> None:
    backend.store.create_service(a_service())
    _rewrite_service_item(backend, schema=99)
    with pytest.raises(SchemaError, match="schema 99, newer than this flotilla understands"):
        backend.store.get_service("api")


def test_an_item_with_mistyped_fields_is_refused_clearly(backend: Backend) -> None:
    backend.store.create_service(a_service())
    _rewrite_service_item(backend, weights="ninety")
    with pytest.raises(SchemaError, match="malformed"):
        backend.store.get_service("api")


def test_rollout_state_and_history_round_trip_through_the_store(backend: Backend) -> None:
    created = backend.store.create_service(a_service())
    now = backend.clock.now()
    state = RolloutState(
        weights={"b" * 64: 100},
        status=RolloutStatus.STOPPED,
        started_at=now,
        watch_since=now,
        failures={"b" * 64: 2},
        reason="2 deploys failed",
        previous_weights={"a" * 64: 100},
        fence_lock="scheduler",
        fence=7,
    )
    history = (HistoryEntry(now, "rollout_stopped", "2 deploys failed", {"b" * 64: 100}),)
    updated = backend.store.update_service(
        dataclasses.replace(created, rollout_state=state, history=history)
    )
    assert backend.store.get_service("api") == updated
    assert backend.store.list_services() == [updated]


def test_a_schema_1_service_item_reads_with_default_rollout_state(backend: Backend) -> None:
    created = backend.store.create_service(a_service())
    _rewrite_service_item(backend, schema=1)
    _remove_service_attributes(backend, "rollout_state", "history")
    legacy = backend.store.get_service("api")
    assert legacy.rollout_state == RolloutState()
    assert legacy.history == ()
    assert legacy.weights == created.weights


def _remove_service_attributes(backend: Backend, *names: str) -> None:
    from flotilla.adapters.memory_store import MemoryStateStore

    if isinstance(backend.store, MemoryStateStore):
        for name in names:
            del backend.store._services["api"][name]
        return
    assert backend.tables is not None
    backend.client.update_item(
        TableName=backend.tables.services,
        Key={"name": {"S": "api"}},
        UpdateExpression="REMOVE " + ", ".join(names),
    )


def _rewrite_service_item(backend: Backend, **changes: object) -> None:
    from flotilla.adapters.memory_store import MemoryStateStore

    if isinstance(backend.store, MemoryStateStore):
        backend.store._services["api"].update(changes)
        return
    from flotilla.adapters.dynamodb_codec import to_attributes

    assert backend.tables is not None
    item = backend.client.get_item(TableName=backend.tables.services, Key={"name": {"S": "api"}})
    backend.client.put_item(
        TableName=backend.tables.services, Item={**item["Item"], **to_attributes(changes)}
    )


# --- races -----------------------------------------------------------------------------


def test_concurrent_weight_changes_are_never_lost(concurrent_backend: Backend) -> None:
    store = concurrent_backend.store
    store.create_service(dataclasses.replace(a_service(), weights={}))
    errors: list[BaseException] = []

    def change_weights(writer: int) -> None:
        try:
            for n in range(10):
                set_weights(store, "api", {f"rev-{writer}-{n}": writer + n})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=change_weights, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    final = store.get_service("api")
    assert final.weights == {f"rev-{w}-{n}": w + n for w in range(6) for n in range(10)}
    assert final.version == 1 + 60  # one stored version per change, none overwritten


def test_concurrent_assignments_let_exactly_one_writer_win(concurrent_backend: Backend) -> None:
    store = concurrent_backend.store
    store.register_instance(
        an_instance(concurrent_backend), expires_at=concurrent_backend.clock.now() + HOUR
    )
    outcomes: list[str] = []
    guard = threading.Lock()

    def assign(revision: str) -> None:
        try:
            store.set_assignment("api", "i-1", revision, expected_version=0)
            result = "won"
        except ConflictError:
            result = "lost"
        with guard:
            outcomes.append(result)

    threads = [threading.Thread(target=assign, args=(f"rev-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    assert store.get_instance("api", "i-1").assignment_version == 1


def test_checkpoint_and_heartbeat_costs_in_dynamodb_calls(dynamodb_backend: Backend) -> None:
    """A checkpoint write is one conditional put; a heartbeat one update; a conflict no read."""
    backend = dynamodb_backend
    assert backend.calls is not None
    created = backend.store.create_deploy(a_checkpoint(backend))
    backend.store.register_instance(an_instance(backend), expires_at=backend.clock.now() + HOUR)
    backend.calls.reset()
    backend.store.update_deploy(dataclasses.replace(created, state="locking"))
    assert dict(backend.calls.calls) == {"PutItem": 1}
    backend.calls.reset()
    with pytest.raises(ConflictError):
        backend.store.update_deploy(dataclasses.replace(created, state="failed"))
    assert dict(backend.calls.calls) == {"PutItem": 1}
    backend.calls.reset()
    backend.store.record_heartbeat("api", "i-1", backend.clock.now(), backend.clock.now() + HOUR)
    assert dict(backend.calls.calls) == {"UpdateItem": 1}


# --- an agent's claim on its instance ----------------------------------------------------


def claimed(backend: Backend, owner: str, length: timedelta, **facts: str) -> Instance:
    """Register i-1 for agent `owner` for `length` from now."""
    now = backend.clock.now()
    claim = AgentClaim(owner, now + length, **facts)
    return backend.store.register_instance(an_instance(backend), expires_at=now + HOUR, claim=claim)


def test_an_agent_claims_its_instance_and_its_heartbeat_renews_the_claim(backend: Backend) -> None:
    store, clock = backend.store, backend.clock
    first = AgentClaim("agent-a", clock.now() + HOUR)
    stored = claimed(backend, "agent-a", HOUR)
    assert stored.agent_owner == "agent-a"
    assert stored.agent_lease_until == first.lease_until
    assert stored.assignment_version == 0

    clock.advance(60)
    renewed = AgentClaim("agent-a", clock.now() + HOUR)
    store.record_heartbeat("api", "i-1", clock.now(), clock.now() + HOUR, claim=renewed)
    after = store.get_instance("api", "i-1")
    assert after.heartbeat_at == clock.now()
    assert after.agent_lease_until == renewed.lease_until

    stolen = AgentClaim("b", clock.now())
    with pytest.raises(LockLostError):
        store.record_heartbeat("api", "i-1", clock.now(), clock.now() + HOUR, claim=stolen)
    with pytest.raises(NotFoundError):
        store.record_heartbeat("api", "i-404", clock.now(), clock.now() + HOUR, claim=renewed)


def test_a_claim_held_by_a_live_agent_is_refused_until_it_runs_out_or_is_proven_dead(
    backend: Backend,
) -> None:
    store, clock = backend.store, backend.clock
    claimed(backend, "a", MINUTE)
    clock.advance(1)
    with pytest.raises(ConflictError) as held:
        claimed(backend, "b", MINUTE)
    assert held.value.current is not None
    assert held.value.current.agent_owner == "a"
    assert store.get_instance("api", "i-1").agent_owner == "a"

    taken = claimed(backend, "b", MINUTE, replacing="a")
    assert taken.agent_owner == "b"

    clock.advance(61)  # b's claim ran out: anyone may take the instance
    assert claimed(backend, "c", MINUTE).agent_owner == "c"
    # Another service's instance of the same machine is another item, with its own claim.
    other = store.register_instance(
        an_instance(backend, service="web"),
        expires_at=clock.now() + HOUR,
        claim=AgentClaim("d", clock.now() + MINUTE),
    )
    assert (other.service, other.agent_owner) == ("web", "d")
    assert store.get_instance("api", "i-1").agent_owner == "c"


def test_only_the_holder_releases_a_claim(backend: Backend) -> None:
    store = backend.store
    claimed(backend, "a", HOUR)
    assert store.release_instance("api", "i-1", "b") is False
    assert store.get_instance("api", "i-1").agent_owner == "a"
    assert store.release_instance("api", "i-1", "a") is True
    assert store.get_instance("api", "i-1").agent_owner is None
    assert store.release_instance("api", "i-404", "a") is False
    assert claimed(backend, "b", HOUR).agent_owner == "b"


def test_an_instance_ec2_says_is_going_is_marked_until_an_agent_takes_it_again(
    backend: Backend,
) -> None:
    store, clock = backend.store, backend.clock
    claimed(backend, "a", MINUTE)
    left = store.mark_instance_left("i-1", clock.now())
    assert left.left_at == clock.now()
    assert store.get_instance("api", "i-1").left_at == clock.now()
    with pytest.raises(NotFoundError):
        store.mark_instance_left("i-404", clock.now())
    clock.advance(61)
    assert claimed(backend, "b", MINUTE).left_at is None


def test_a_checkpoint_frees_its_deploys_slot_in_the_same_write_if_it_still_holds_it(
    backend: Backend,
) -> None:
    store, locks = backend.store, backend.locks
    created = store.create_deploy(a_checkpoint(backend))
    lease = locks.acquire("deploy/api", "d-1", slots=1, lease=HOUR)
    assert lease is not None
    with pytest.raises(ConflictError):  # a stale checkpoint: the slot stays held
        store.update_deploy(dataclasses.replace(created, version=0), release=lease)
    assert [h.owner for h in locks.holders("deploy/api")] == ["d-1"]

    unlocked = store.update_deploy(dataclasses.replace(created, state="unlocked"), release=lease)
    assert locks.holders("deploy/api") == []
    assert store.get_deploy("api/i-1.1") == unlocked

    # A slot no longer held (it lapsed, or was taken) does not stop the checkpoint.
    taken = locks.acquire("deploy/api", "d-2", slots=1, lease=HOUR)
    assert taken is not None
    done = store.update_deploy(dataclasses.replace(unlocked, state="done"), release=lease)
    assert store.get_deploy("api/i-1.1") == done
    assert [h.owner for h in locks.holders("deploy/api")] == ["d-2"]
