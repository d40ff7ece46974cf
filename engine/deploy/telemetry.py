"""Tracing helpers: a trace per deploy that survives crashes, through the OpenTelemetry API only.

A span cannot be ended by another process, so each state of a deploy is one short span,
a child of the deploy's root context (stored in the checkpoint as a W3C `traceparent`).
A resumed deploy starts a `resume` span linked to the last span of the interrupted one.
Library code uses only the API; the SDK (exporters) is configured at entry points.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from flotilla.engine.checkpoint import DeployCheckpoint, UnitPlan

_propagator = TraceContextTextMapPropagator()
Attributes = Mapping[str, str | int | bool | float]


def tracer() -> trace.Tracer:
    return trace.get_tracer("flotilla")


def start_trace(name: str, attributes: Attributes) -> str:
    """Record a root span and return its context as a `traceparent` to store."""
    with tracer().start_as_current_span(name, attributes=attributes):
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def _context_of(traceparent: str | None) -> otel_context.Context:
    if not traceparent:
        return otel_context.Context()
    return _propagator.extract({"traceparent": traceparent})


def link_to(traceparent: str | None, span_id: str | None) -> list[Link]:
    """A link to an earlier span of the same trace (the one a crash interrupted)."""
    parent = trace.get_current_span(_context_of(traceparent)).get_span_context()
    if not parent.is_valid or not span_id:
        return []
    earlier = SpanContext(
        trace_id=parent.trace_id,
        span_id=int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return [Link(earlier)]


@contextmanager
def child_span(
    traceparent: str | None, name: str, attributes: Attributes, links: list[Link] | None = None
) -> Iterator[Span]:
    """A span under the stored deploy context; errors mark it failed and propagate."""
    with tracer().start_as_current_span(
        name,
        context=_context_of(traceparent),
        attributes=attributes,
        links=links or [],
        record_exception=True,
        set_status_on_exception=True,
    ) as span:
        yield span


@contextmanager
def call_span(name: str, attributes: Attributes) -> Iterator[Span]:
    """A child of the current span, for one AWS or systemd call."""
    with tracer().start_as_current_span(name, attributes=attributes) as span:
        yield span


def span_id_of(span: Span) -> str:
    return format(span.get_span_context().span_id, "016x")


def mark_error(span: Span, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, message))


def flush() -> None:
    """Push buffered spans out: a SIGKILL would lose what the batch processor holds."""
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if callable(force_flush):
        force_flush(5000)


def mark_skipped(span: trace.Span, reason: str | None) -> None:
    """A state whose step was not performed, and why (the machine's words)."""
    span.set_attribute("flotilla.skipped", True)
    if reason is not None:
        span.set_attribute("flotilla.skip_reason", reason)


def mark_unit_plan(span: trace.Span, plan: UnitPlan) -> None:
    """Which units the deploy replaces (names only: a plan holds nothing secret)."""
    span.set_attribute("flotilla.units_changed", ",".join(plan.changed))
    span.set_attribute("flotilla.units_removed", ",".join(plan.removed))
    span.set_attribute("flotilla.traffic_kept", plan.traffic_kept)


def deploy_attributes(checkpoint: DeployCheckpoint) -> dict[str, str | int | bool | float]:
    """Span attributes: identifiers only, never an environment value."""
    return {
        "flotilla.service": checkpoint.service,
        "flotilla.instance": checkpoint.instance_id,
        "flotilla.deploy": checkpoint.id,
        "flotilla.from_revision": checkpoint.from_revision or "",
        "flotilla.to_revision": checkpoint.to_revision or "",
        "flotilla.state": checkpoint.state,
    }


def deploy_log_fields(checkpoint: DeployCheckpoint) -> dict[str, object]:
    return {
        "deploy_id": checkpoint.id,
        "service": checkpoint.service,
        "instance": checkpoint.instance_id,
        "state": checkpoint.state,
    }
