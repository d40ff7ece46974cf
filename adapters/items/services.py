"""Services (with the scheduler's rollout state and history) as stored items, and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flotilla.adapters.items import common
from flotilla.adapters.items.common import Item
from flotilla.engine import health_checks, validation
from flotilla.engine.errors import ValidationError
from flotilla.engine.records import (
    DEFAULT_HEALTH_PERIOD,
    DEFAULT_PROGRESS_DEADLINE,
    FailureAction,
    GateResult,
    HealthCheck,
    HealthCheckProtocol,
    HistoryEntry,
    LoadBalancerKind,
    LoadBalancerRef,
    Promotion,
    RolloutPolicy,
    RolloutState,
    RolloutStatus,
    RolloutStep,
    Service,
    Wave,
    WavePlan,
    WaveStatus,
)

# Schema 2 added the scheduler's rollout state and the service history; schema 3 step
# plans, gates, the progress deadline, the failure action (`auto_revert` false reads as
# `hold`) and promotions; schema 4 the health check, health command and health period.
# Older items read with their defaults; an older flotilla refuses newer items instead of
# writing the whole item back without them. Schema 5 adds the deletion mark
# (`deleting_ms`); only a service being deleted is written as schema 5, so an older
# flotilla keeps reading every other service, and refuses (rather than writes back
# without its mark, which would cancel the deletion) only one being deleted. Schema 6
# adds the regions and the rollout in waves, written only for a service of several
# regions, for the same reason: an older scheduler must not write one back without them.
SERVICE_SCHEMA = 6
DELETING_SCHEMA = 5
UNMARKED_SCHEMA = 4  # what a service that is not being deleted is written as


def _schema(service: Service) -> int:
    if service.regions or service.waves is not None:
        return SERVICE_SCHEMA
    return DELETING_SCHEMA if service.deleting else UNMARKED_SCHEMA


def service_to_item(service: Service) -> Item:
    balancer = service.load_balancer
    return {
        "schema": _schema(service),
        "name": service.name,
        "load_balancer": None
        if balancer is None
        else {"kind": balancer.kind.value, "name": balancer.name},
        "drain_timeout_seconds": service.drain_timeout_seconds,
        "health_timeout_seconds": service.health_timeout_seconds,
        "settle_seconds": service.settle_seconds,
        "health_check": _health_check_to_item(service.health_check),
        "health_command": service.health_command,
        "health_period_seconds": service.health_period_seconds,
        "rollout": _policy_to_item(service.rollout),
        "weights": dict(service.weights),
        "paused": service.paused,
        "version": service.version,
        "created_ms": common.ms(service.created_at),
        "updated_ms": common.ms(service.updated_at),
        "rollout_state": _rollout_state_to_item(service.rollout_state),
        "history": [
            {
                "at_ms": common.ms(e.at),
                "kind": e.kind,
                "reason": e.reason,
                "weights": dict(e.weights),
            }
            for e in service.history
        ],
        "promotion": None if service.promotion is None else _promotion_to_item(service.promotion),
        "deleting_ms": common.ms(service.deleting_since),
        "regions": list(service.regions),
        "waves": None if service.waves is None else _waves_to_item(service.waves),
    }


def _regions(value: Any) -> tuple[str, ...]:
    """A list of distinct region names, as `service create` stored it; () when absent."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise TypeError("regions is not a list of names")
    try:
        return validation.region_list(value, "the stored regions")
    except ValidationError as exc:
        raise ValueError(exc.message) from exc


def _waves_to_item(plan: WavePlan) -> Item:
    return {
        "number": plan.number,
        "waves": [
            {
                "region": wave.region,
                "weights": dict(wave.weights),
                "before": None if wave.before is None else dict(wave.before),
                "applied_ms": common.ms(wave.applied_at),
                "completed_ms": common.ms(wave.completed_at),
                "undone": wave.undone,
            }
            for wave in plan.waves
        ],
        "bake_seconds": plan.bake_seconds,
        "failure_action": plan.failure_action.value,
        "status": plan.status.value,
        "started_ms": common.ms(plan.started_at),
        "by": plan.by,
        "reason": plan.reason,
        "stop_all": plan.stop_all,
    }


def _waves_from_item(item: Mapping[str, Any] | None) -> WavePlan | None:
    if item is None:
        return None
    started = common.time(item["started_ms"])
    if started is None:
        raise ValueError("waves started_ms is empty")
    return WavePlan(
        number=int(item["number"]),
        waves=tuple(
            Wave(
                region=_regions([wave["region"]])[0],
                weights=_weights(wave["weights"]),
                before=None if wave.get("before") is None else _weights(wave["before"]),
                applied_at=common.time(wave.get("applied_ms")),
                completed_at=common.time(wave.get("completed_ms")),
                undone=bool(wave.get("undone", False)),
            )
            for wave in item["waves"]
        ),
        bake_seconds=int(item["bake_seconds"]),
        failure_action=FailureAction(item["failure_action"]),
        status=WaveStatus(item["status"]),
        started_at=started,
        by=str(item["by"]),
        reason=common.optional_str(item.get("reason")),
        stop_all=bool(item.get("stop_all", False)),
    )


def _health_check_to_item(check: HealthCheck | None) -> Item | None:
    if check is None:
        return None
    return {
        "protocol": check.protocol.value,
        "port": check.port,
        "path": check.path,
        "healthy_threshold": check.healthy_threshold,
        "unhealthy_threshold": check.unhealthy_threshold,
        "interval_seconds": check.interval_seconds,
        "timeout_seconds": check.timeout_seconds,
    }


def _health_check_from_item(item: Mapping[str, Any] | None) -> HealthCheck | None:
    if item is None:  # before schema 4, or the template's fixed check
        return None
    check = HealthCheck(
        protocol=HealthCheckProtocol(item["protocol"]),
        port=int(item["port"]),
        path=common.optional_str(item.get("path")),
        healthy_threshold=int(item["healthy_threshold"]),
        unhealthy_threshold=int(item["unhealthy_threshold"]),
        interval_seconds=int(item["interval_seconds"]),
        timeout_seconds=int(item["timeout_seconds"]),
    )
    # It reaches a template parameter and the agent's probe: a malformed one is a
    # malformed item, refused here, not a failed stack or probe later.
    try:
        return health_checks.health_check(check)
    except ValidationError as bad:
        raise ValueError(bad.message) from bad


def _policy_to_item(policy: RolloutPolicy) -> Item:
    return {
        "max_in_flight": policy.max_in_flight,
        "max_failures": policy.max_failures,
        "failure_action": policy.failure_action.value,
        "steps": [{"amount": s.amount, "bake_seconds": s.bake_seconds} for s in policy.steps],
        "alarms": list(policy.alarms),
        "webhooks": list(policy.webhooks),
        "progress_deadline_seconds": policy.progress_deadline_seconds,
        "revert_max_in_flight": policy.revert_max_in_flight,
    }


def _policy_from_item(item: Mapping[str, Any]) -> RolloutPolicy:
    action = item.get("failure_action")
    if action is None:  # schema 2: auto_revert
        action = "revert" if item.get("auto_revert", True) else "hold"
    policy = _policy_fields(item, FailureAction(action))
    # What the scheduler and status compute with must have the shape it was stored with
    # (validated at write): a malformed one is a malformed item, not a crash later.
    try:
        validation.max_in_flight(policy.max_in_flight)
        if policy.revert_max_in_flight is not None:
            validation.max_in_flight(policy.revert_max_in_flight)
        validation.rollout_steps(policy.steps)
        validation.non_negative("max_failures", policy.max_failures)
        # A deadline beyond any datetime would overflow the scheduler's arithmetic.
        validation.timeout_seconds("progress deadline", policy.progress_deadline_seconds)
    except ValidationError as bad:
        raise ValueError(bad.message) from bad
    return policy


def _policy_fields(item: Mapping[str, Any], action: FailureAction) -> RolloutPolicy:
    return RolloutPolicy(
        max_in_flight=str(item["max_in_flight"]),
        max_failures=int(item["max_failures"]),
        failure_action=action,
        steps=tuple(
            RolloutStep(common.optional_str(s["amount"]), int(s["bake_seconds"]))
            for s in item.get("steps") or ()
        ),
        alarms=tuple(str(a) for a in item.get("alarms") or ()),
        webhooks=tuple(str(w) for w in item.get("webhooks") or ()),
        progress_deadline_seconds=int(
            item.get("progress_deadline_seconds", DEFAULT_PROGRESS_DEADLINE)
        ),
        revert_max_in_flight=common.optional_str(item.get("revert_max_in_flight")),
    )


def _promotion_to_item(promotion: Promotion) -> Item:
    return {
        "number": promotion.number,
        "full": promotion.full,
        "at_ms": common.ms(promotion.at),
        "by": promotion.by,
    }


def _promotion_from_item(item: Mapping[str, Any] | None) -> Promotion | None:
    if item is None:
        return None
    at = common.time(item["at_ms"])
    if at is None:
        raise ValueError("promotion at_ms is empty")
    return Promotion(int(item["number"]), bool(item["full"]), at, str(item["by"]))


def _gate_to_item(gate: GateResult | None) -> Item | None:
    if gate is None:
        return None
    return {
        "step": gate.step,
        "passed": gate.passed,
        "at_ms": common.ms(gate.at),
        "reason": gate.reason,
    }


def _gate_from_item(item: Mapping[str, Any] | None) -> GateResult | None:
    if item is None:
        return None
    at = common.time(item["at_ms"])
    if at is None:
        raise ValueError("gate at_ms is empty")
    return GateResult(
        int(item["step"]), bool(item["passed"]), at, common.optional_str(item.get("reason"))
    )


def _rollout_state_to_item(state: RolloutState) -> Item:
    return {
        "weights": dict(state.weights),
        "status": state.status.value,
        "started_ms": common.ms(state.started_at),
        "watch_since_ms": common.ms(state.watch_since),
        "failures": dict(state.failures),
        "reason": state.reason,
        "previous_weights": None
        if state.previous_weights is None
        else dict(state.previous_weights),
        "fence_lock": state.fence_lock,
        "fence": state.fence,
        "slots": state.slots,
        "step": state.step,
        "step_since_ms": common.ms(state.step_since),
        "baking_since_ms": common.ms(state.baking_since),
        "gate": _gate_to_item(state.gate),
        "skip_step": state.skip_step,
        "promoted": state.promoted,
        "fast": state.fast,
        "resumed_ms": common.ms(state.resumed_at),
        "announced_ms": common.ms(state.announced_until),
    }


def _weights(value: Mapping[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in value.items()}


def _rollout_state_from_item(item: Mapping[str, Any] | None) -> RolloutState:
    if item is None:  # a schema-1 item: no rollout seen yet
        return RolloutState()
    previous = item.get("previous_weights")
    return RolloutState(
        weights=_weights(item["weights"]),
        status=RolloutStatus(item["status"]),
        started_at=common.time(item.get("started_ms")),
        watch_since=common.time(item.get("watch_since_ms")),
        failures=_weights(item.get("failures") or {}),
        reason=common.optional_str(item.get("reason")),
        previous_weights=None if previous is None else _weights(previous),
        fence_lock=common.optional_str(item.get("fence_lock")),
        fence=int(item.get("fence", 0)),
        slots=int(item.get("slots", 0)),
        step=int(item.get("step", 0)),
        step_since=common.time(item.get("step_since_ms")),
        baking_since=common.time(item.get("baking_since_ms")),
        gate=_gate_from_item(item.get("gate")),
        skip_step=None if item.get("skip_step") is None else int(item["skip_step"]),
        promoted=int(item.get("promoted", 0)),
        fast=bool(item.get("fast", False)),
        resumed_at=common.time(item.get("resumed_ms")),
        announced_until=common.time(item.get("announced_ms")),
    )


def _history_entry_from_item(item: Mapping[str, Any]) -> HistoryEntry:
    at = common.time(item["at_ms"])
    if at is None:
        raise ValueError("history at_ms is empty")
    return HistoryEntry(
        at=at, kind=str(item["kind"]), reason=str(item["reason"]), weights=_weights(item["weights"])
    )


def service_from_item(item: Mapping[str, Any]) -> Service:
    common.check_schema(item, "service", SERVICE_SCHEMA)

    def build() -> Service:
        balancer = item.get("load_balancer")
        return Service(
            name=str(item["name"]),
            load_balancer=None
            if balancer is None
            else LoadBalancerRef(LoadBalancerKind(balancer["kind"]), str(balancer["name"])),
            drain_timeout_seconds=int(item["drain_timeout_seconds"]),
            health_timeout_seconds=int(item["health_timeout_seconds"]),
            settle_seconds=int(item["settle_seconds"]),
            health_check=_health_check_from_item(item.get("health_check")),
            health_command=common.optional_str(item.get("health_command")),
            health_period_seconds=int(item.get("health_period_seconds", DEFAULT_HEALTH_PERIOD)),
            rollout=_policy_from_item(item["rollout"]),
            weights={str(k): int(v) for k, v in item["weights"].items()},
            paused=bool(item["paused"]),
            version=int(item["version"]),
            created_at=common.time(item.get("created_ms")),
            updated_at=common.time(item.get("updated_ms")),
            rollout_state=_rollout_state_from_item(item.get("rollout_state")),
            history=tuple(_history_entry_from_item(e) for e in item.get("history") or ()),
            promotion=_promotion_from_item(item.get("promotion")),
            deleting_since=common.time(item.get("deleting_ms")),
            regions=_regions(item.get("regions")),
            waves=_waves_from_item(item.get("waves")),
        )

    return common.read("service", item, build)
