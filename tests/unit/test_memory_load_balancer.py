"""The in-memory load balancer's timing and fault switches, on a fake clock.

The contract suite (tests/contract/test_load_balancer.py) shows it behaves like the ELB
adapters; these tests pin what moto cannot show: how long draining and the first health
checks last, an instance that never becomes healthy, and injected failures.
"""

from __future__ import annotations

import pytest

from flotilla.adapters.memory_load_balancer import MemoryLoadBalancer
from flotilla.engine.clock import FakeClock
from flotilla.engine.deploy.retry import with_retries
from flotilla.engine.errors import ConfigurationError, FlotillaError, TransientError
from flotilla.engine.ports import TargetState

DRAIN = 300.0  # ALB's default deregistration delay
HEALTH = 30.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lb(clock: FakeClock) -> MemoryLoadBalancer:
    return MemoryLoadBalancer(clock, drain_seconds=DRAIN, health_seconds=HEALTH, name="web")


def healthy(lb: MemoryLoadBalancer, clock: FakeClock, instance_id: str) -> None:
    lb.register(instance_id)
    clock.advance(HEALTH)
    assert lb.state(instance_id) is TargetState.HEALTHY


def test_initial_lasts_health_seconds_then_healthy(
    lb: MemoryLoadBalancer, clock: FakeClock
) -> None:
    lb.register("i-1")
    assert lb.state("i-1") is TargetState.INITIAL
    clock.advance(HEALTH - 0.001)
    assert lb.state("i-1") is TargetState.INITIAL
    clock.advance(0.001)
    assert lb.state("i-1") is TargetState.HEALTHY


def test_draining_lasts_drain_seconds_then_unused(lb: MemoryLoadBalancer, clock: FakeClock) -> None:
    healthy(lb, clock, "i-1")
    lb.deregister("i-1")
    assert lb.state("i-1") is TargetState.DRAINING
    assert lb.registered() == set()  # no new traffic while it drains
    clock.advance(DRAIN - 0.001)
    assert lb.state("i-1") is TargetState.DRAINING
    clock.advance(0.001)
    assert lb.state("i-1") is TargetState.UNUSED


def test_without_drain_seconds_a_deregistered_instance_is_unused_at_once(
    clock: FakeClock,
) -> None:
    lb = MemoryLoadBalancer(clock)
    lb.register("i-1")
    assert lb.state("i-1") is TargetState.HEALTHY
    lb.deregister("i-1")
    assert lb.state("i-1") is TargetState.UNUSED


def test_an_instance_that_never_becomes_healthy_stays_unhealthy(
    lb: MemoryLoadBalancer, clock: FakeClock
) -> None:
    lb.never_healthy("i-1")
    lb.register("i-1")
    assert lb.state("i-1") is TargetState.INITIAL  # its first checks are still running
    clock.advance(HEALTH)
    for _ in range(24):
        assert lb.state("i-1") is TargetState.UNHEALTHY
        clock.advance(3600)
    assert lb.state("i-2") is TargetState.UNUSED  # others are not affected


def test_a_healed_instance_needs_its_health_checks_again(
    lb: MemoryLoadBalancer, clock: FakeClock
) -> None:
    lb.never_healthy("i-1")
    lb.register("i-1")
    clock.advance(HEALTH * 10)
    assert lb.state("i-1") is TargetState.UNHEALTHY
    lb.heal("i-1")
    assert lb.state("i-1") is TargetState.INITIAL
    clock.advance(HEALTH)
    assert lb.state("i-1") is TargetState.HEALTHY


def test_registering_again_does_not_restart_the_health_checks(
    lb: MemoryLoadBalancer, clock: FakeClock
) -> None:
    lb.register("i-1")
    clock.advance(HEALTH - 1)
    lb.register("i-1")
    clock.advance(1)
    assert lb.state("i-1") is TargetState.HEALTHY


def test_registering_a_draining_instance_ends_the_drain_and_checks_health_again(
    lb: MemoryLoadBalancer, clock: FakeClock
) -> None:
    healthy(lb, clock, "i-1")
    lb.deregister("i-1")
    clock.advance(10)
    lb.register("i-1")
    assert lb.state("i-1") is TargetState.INITIAL
    clock.advance(HEALTH)
    assert lb.state("i-1") is TargetState.HEALTHY
    clock.advance(DRAIN)
    assert lb.state("i-1") is TargetState.HEALTHY


def test_deregistering_again_does_not_extend_the_drain(
    lb: MemoryLoadBalancer, clock: FakeClock
) -> None:
    healthy(lb, clock, "i-1")
    lb.deregister("i-1")
    clock.advance(DRAIN - 1)
    lb.deregister("i-1")
    clock.advance(1)
    assert lb.state("i-1") is TargetState.UNUSED


def test_deregistering_an_unregistered_instance_starts_no_drain(lb: MemoryLoadBalancer) -> None:
    lb.deregister("i-1")
    assert lb.state("i-1") is TargetState.UNUSED


def test_an_instance_deregistered_during_its_first_checks_drains(
    lb: MemoryLoadBalancer, clock: FakeClock
) -> None:
    lb.register("i-1")
    clock.advance(1)
    lb.deregister("i-1")
    assert lb.state("i-1") is TargetState.DRAINING


def test_failed_calls_are_transient_change_nothing_and_are_recorded(
    lb: MemoryLoadBalancer, clock: FakeClock
) -> None:
    lb.fail_next(2)
    for _ in range(2):
        with pytest.raises(TransientError) as throttled:
            lb.register("i-1")
        assert throttled.value.retryable
    assert lb.registered() == set()
    lb.register("i-1")
    assert lb.registered() == {"i-1"}
    assert lb.calls == [("register", "i-1")] * 3


def test_failures_can_be_any_error(lb: MemoryLoadBalancer) -> None:
    lb.fail_next(1, ConfigurationError("access denied (injected)"))
    with pytest.raises(ConfigurationError):
        lb.state("i-1")
    assert lb.state("i-1") is TargetState.UNUSED


def test_the_engines_retry_policy_rides_out_injected_throttling(
    lb: MemoryLoadBalancer, clock: FakeClock
) -> None:
    lb.fail_next(3)
    state = with_retries(lambda: lb.state("i-1"), clock=clock)
    assert state is TargetState.UNUSED
    assert len(lb.calls) == 4


def test_a_deleted_load_balancer_is_a_configuration_error_naming_it(
    lb: MemoryLoadBalancer,
) -> None:
    lb.delete()
    for call in (lb.register, lb.deregister, lb.state):
        with pytest.raises(ConfigurationError) as missing:
            call("i-1")
        assert "'web'" in missing.value.message
        assert not isinstance(missing.value, TransientError)
    assert isinstance(missing.value, FlotillaError)
