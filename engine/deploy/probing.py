"""The agent-side health gate of `healthy` for a service without a load balancer: its probe
(`probe_target`) must pass without a break for the health period,
before the health deadline stored in the checkpoint.

The streak is not stored: a deploy resumed after a crash probes again from the start of a
period, which only makes it stricter; the deadline is stored, so it gets no fresh budget.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from flotilla.engine.clock import Clock
from flotilla.engine.deploy.errors import StepFailed
from flotilla.engine.deploy.telemetry import call_span
from flotilla.engine.ports import HealthProbe, ProbeTarget
from flotilla.engine.records import Service

PROBE_INTERVAL_SECONDS = 1.0  # between two probes: a period of N s is about N passes
DEFAULT_PROBE_TIMEOUT = timedelta(seconds=5)


def probe_target(service: Service) -> ProbeTarget | None:
    """What the agent probes on its instance before `healthy` succeeds: nothing for a
    service with a load balancer (its check decides) or without a check of its own."""
    if service.load_balancer is not None:
        return None
    if service.health_command is not None:
        return ProbeTarget(kind="command", command=service.health_command)
    check = service.health_check
    if check is None:
        return None
    kind = check.protocol.value.lower()
    return ProbeTarget(kind=kind, port=check.port, path=check.path)


def require_service_probe(
    probe: HealthProbe | None,
    service: Service,
    clock: Clock,
    deadline: datetime,
    *,
    between: Callable[[], None] = lambda: None,
) -> None:
    """`healthy`'s probe for `service`, if it has one: passing for its health period by
    `deadline`, each probe taking at most the check's timeout; one span for the whole."""
    target = probe_target(service)
    if target is None:
        return
    if probe is None:
        raise StepFailed(f"this agent cannot probe {target.describe()}: it has no probe")
    check = service.health_check
    with call_span("probe", {"flotilla.call": "probe", "flotilla.probe": target.describe()}):
        require_probe_passing(
            probe,
            target,
            clock=clock,
            period=timedelta(seconds=service.health_period_seconds),
            deadline=deadline,
            timeout=timedelta(seconds=check.timeout_seconds) if check else DEFAULT_PROBE_TIMEOUT,
            between=between,
        )


def require_probe_passing(
    probe: HealthProbe,
    target: ProbeTarget,
    *,
    clock: Clock,
    period: timedelta,
    deadline: datetime,
    timeout: timedelta = DEFAULT_PROBE_TIMEOUT,
    between: Callable[[], None] = lambda: None,
) -> int:
    """Probe every second until the probe has passed for `period` without a failure in
    between; return how many probes it took. `StepFailed` once `deadline` comes first,
    saying what the last failing probe saw (never a body or a command's output).
    `between` runs before each probe (the deploy keeps its leases alive there)."""
    passing_since: datetime | None = None
    last_failure: str | None = None
    probes = 0
    while True:
        between()
        result = probe.check(target, timeout=timeout)
        probes += 1
        now = clock.now()
        if not result.passed:
            passing_since, last_failure = None, result.detail
        elif passing_since is None:
            passing_since = now
        if passing_since is not None and now - passing_since >= period:
            return probes
        if now >= deadline:
            raise StepFailed(_late(target, period, deadline, last_failure, passing_since, now))
        clock.sleep(min(PROBE_INTERVAL_SECONDS, (deadline - now).total_seconds()))


def _late(
    target: ProbeTarget,
    period: timedelta,
    deadline: datetime,
    last_failure: str | None,
    passing_since: datetime | None,
    now: datetime,
) -> str:
    head = (
        f"health probe {target.describe()} did not pass for {period.total_seconds():g} s "
        f"in a row before the health deadline {deadline:%H:%M:%S}Z"
    )
    if passing_since is not None:
        streak = (now - passing_since).total_seconds()
        head += f" (it had passed for {streak:g} s)"
    return f"{head}; last failure: {last_failure}" if last_failure else head
