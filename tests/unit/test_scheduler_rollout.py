"""The pure rollout planner: phases, slots, failure budget, history; and the record codec."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from flotilla.adapters import items
from flotilla.adapters.dynamodb_codec import from_attributes, to_attributes
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.records import (
    HISTORY_LIMIT,
    HistoryEntry,
    Instance,
    RolloutPolicy,
    RolloutState,
    RolloutStatus,
    Service,
    deploy_id_for,
)
from flotilla.scheduler.rollout import (
    Phase,
    ServiceInputs,
    ServicePlan,
    phase_of,
    plan_service,
    running_deploys,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
V1, V2, V3 = "1" * 64, "2" * 64, "3" * 64


def instance(n: int, assigned: str | None, current: str | None, version: int = 1) -> Instance:
    return Instance(f"i-{n}", "api", "t", NOW, NOW, assigned, version, current)


def deploy(of: Instance, outcome: Outcome | None, created: datetime = NOW) -> DeployCheckpoint:
    return DeployCheckpoint(
        id=deploy_id_for(of),
        service="api",
        instance_id=of.id,
        from_revision=of.current_revision,
        to_revision=of.assigned_revision or "",
        state="done" if outcome else "starting",
        machine_version=1,
        created_at=created,
        updated_at=created,
        outcome=outcome,
        error="boom" if outcome in (Outcome.ROLLED_BACK, Outcome.FAILED) else None,
    )


def rolling(weights: dict[str, int], **changes: object) -> RolloutState:
    state = RolloutState(
        weights=weights,
        status=RolloutStatus.ROLLING,
        started_at=NOW - timedelta(minutes=1),
        watch_since=NOW - timedelta(minutes=1),
        previous_weights={V1: 100},
    )
    return dataclasses.replace(state, **changes)  # type: ignore[arg-type]


def service(
    weights: dict[str, int], state: RolloutState, *, max_in_flight: str = "1", failures: int = 1
) -> Service:
    return Service(
        "api",
        rollout=RolloutPolicy(max_in_flight, failures),
        weights=weights,
        rollout_state=state,
        version=3,
    )


def plan(
    svc: Service, live: list[Instance], deploys: Sequence[DeployCheckpoint] = ()
) -> ServicePlan:
    inputs = ServiceInputs(svc, live, [], {d.id: d for d in deploys}, NOW)
    return plan_service(inputs, fence_lock="scheduler", fence=5)


def test_phases_follow_the_deploy_of_the_current_assignment() -> None:
    settled = instance(1, V1, V1)
    pending = instance(2, V2, V1)
    running = instance(3, V2, V1)
    failed = instance(4, V2, V1)
    finishing = instance(5, V2, V2)  # current set at `healthy`, deploy not done yet
    deploys = [deploy(running, None), deploy(failed, Outcome.ROLLED_BACK), deploy(finishing, None)]
    by_id = {d.id: d for d in deploys}
    busy = running_deploys(deploys)
    assert [phase_of(i, by_id, busy) for i in (settled, pending, running, failed, finishing)] == [
        Phase.SETTLED,
        Phase.IN_FLIGHT,
        Phase.IN_FLIGHT,
        Phase.FAILED,
        Phase.IN_FLIGHT,
    ]


def test_an_instance_already_in_flight_is_retargeted_without_a_new_slot() -> None:
    weights = {V3: 100}
    live = [instance(1, V2, V1), instance(2, V1, V1), instance(3, V1, V1)]
    result = plan(service(weights, rolling(weights)), live, [deploy(live[0], None)])
    assert [(a.instance_id, a.revision) for a in result.assignments] == [("i-1", V3)]
    assert (result.in_flight, result.slots, result.waiting) == (1, 1, 2)


def test_max_failures_zero_stops_at_the_first_failure_like_one() -> None:
    weights = {V1: 0, V2: 100}
    live = [instance(1, V2, V1), instance(2, V1, V1)]
    svc = service(weights, rolling(weights), failures=0)
    result = plan(svc, live, [deploy(live[0], Outcome.FAILED)])
    assert result.updated is not None
    assert result.updated.weights == {V1: 100}
    assert [e.kind for e in result.new_history] == ["rollout_stopped", "reverted"]
    assert [(a.instance_id, a.revision) for a in result.assignments] == [("i-1", V1)]


def test_failures_of_earlier_rollouts_or_unweighted_revisions_do_not_count() -> None:
    weights = {V1: 100, V2: 0}
    live = [instance(1, V2, V1), instance(2, V3, V1, version=2)]
    old = deploy(live[0], Outcome.ROLLED_BACK, created=NOW - timedelta(hours=1))
    unweighted = deploy(live[1], Outcome.ROLLED_BACK)
    svc = service(weights, rolling(weights))
    result = plan(svc, live, [old, unweighted])
    state = (result.updated or svc).rollout_state
    assert (state.status, state.failures) == (RolloutStatus.ROLLING, {})
    assert result.new_history == ()


def test_a_weight_change_mid_rollout_keeps_watching_the_earlier_deploys() -> None:
    state = rolling({V2: 100})
    result = plan(service({V3: 100}, state), [instance(1, V2, V1)])
    assert result.updated is not None
    new = result.updated.rollout_state
    assert new.started_at == NOW
    assert new.watch_since == state.watch_since
    assert (new.fence_lock, new.fence) == ("scheduler", 5)


def test_a_paused_service_plans_nothing_at_all() -> None:
    svc = dataclasses.replace(service({V2: 100}, RolloutState()), paused=True)
    result = plan(svc, [instance(1, None, None)])
    assert result.writes_nothing


def test_history_keeps_the_last_entries_only() -> None:
    old = tuple(HistoryEntry(NOW, "rollout_started", str(n), {}) for n in range(HISTORY_LIMIT))
    svc = dataclasses.replace(service({V2: 100}, RolloutState()), history=old)
    result = plan(svc, [instance(1, V2, V2)])
    assert result.updated is not None
    history = result.updated.history
    assert len(history) == HISTORY_LIMIT
    assert history[-1].kind == "rollout_complete"
    assert history[0].reason == "2"


# --- the record codec -----------------------------------------------------------------

moments = st.integers(min_value=0, max_value=4_000_000_000_000).map(
    lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
)
weights = st.dictionaries(st.text(min_size=1, max_size=8), st.integers(0, 10**6), max_size=3)
states = st.builds(
    RolloutState,
    weights=weights,
    status=st.sampled_from(RolloutStatus),
    started_at=st.none() | moments,
    watch_since=st.none() | moments,
    failures=weights,
    reason=st.none() | st.text(max_size=20),
    previous_weights=st.none() | weights,
    fence_lock=st.none() | st.text(max_size=20),
    fence=st.integers(0, 10**9),
)
entries = st.builds(HistoryEntry, moments, st.text(max_size=10), st.text(max_size=20), weights)


@given(state=states, history=st.lists(entries, max_size=4).map(tuple))
def test_rollout_state_and_history_survive_the_item_codec_and_dynamodb(
    state: RolloutState, history: tuple[HistoryEntry, ...]
) -> None:
    record = Service("api", rollout_state=state, history=history)
    item = items.service_to_item(record)
    assert items.service_from_item(item) == record
    assert items.service_from_item(from_attributes(to_attributes(item))) == record
