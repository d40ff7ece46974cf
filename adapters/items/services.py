"""Services (with the scheduler's rollout state and history) as stored items, and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flotilla.adapters.items import common
from flotilla.adapters.items.common import Item
from flotilla.engine.records import (
    HistoryEntry,
    LoadBalancerKind,
    LoadBalancerRef,
    RolloutPolicy,
    RolloutState,
    RolloutStatus,
    Service,
)

# Schema 2 added the scheduler's rollout state and the service history. Schema-1 items
# read with their defaults; a schema-1 flotilla refuses schema-2 items instead of
# writing the whole item back without them.
SERVICE_SCHEMA = 2


def service_to_item(service: Service) -> Item:
    balancer = service.load_balancer
    return {
        "schema": SERVICE_SCHEMA,
        "name": service.name,
        "load_balancer": None
        if balancer is None
        else {"kind": balancer.kind.value, "name": balancer.name},
        "drain_timeout_seconds": service.drain_timeout_seconds,
        "health_timeout_seconds": service.health_timeout_seconds,
        "settle_seconds": service.settle_seconds,
        "rollout": {
            "max_in_flight": service.rollout.max_in_flight,
            "max_failures": service.rollout.max_failures,
            "auto_revert": service.rollout.auto_revert,
        },
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
    }


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
        rollout = item["rollout"]
        return Service(
            name=str(item["name"]),
            load_balancer=None
            if balancer is None
            else LoadBalancerRef(LoadBalancerKind(balancer["kind"]), str(balancer["name"])),
            drain_timeout_seconds=int(item["drain_timeout_seconds"]),
            health_timeout_seconds=int(item["health_timeout_seconds"]),
            settle_seconds=int(item["settle_seconds"]),
            rollout=RolloutPolicy(
                max_in_flight=str(rollout["max_in_flight"]),
                max_failures=int(rollout["max_failures"]),
                auto_revert=bool(rollout["auto_revert"]),
            ),
            weights={str(k): int(v) for k, v in item["weights"].items()},
            paused=bool(item["paused"]),
            version=int(item["version"]),
            created_at=common.time(item.get("created_ms")),
            updated_at=common.time(item.get("updated_ms")),
            rollout_state=_rollout_state_from_item(item.get("rollout_state")),
            history=tuple(_history_entry_from_item(e) for e in item.get("history") or ()),
        )

    return common.read("service", item, build)
