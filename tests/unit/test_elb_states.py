"""AWS's answers that moto never gives, fed to the ELB adapters through botocore's Stubber.

moto reports an instance InService/healthy as soon as it is registered and forgets it as
soon as it is deregistered; real load balancers drain, run their first health checks,
and describe both in words. The rows below are the states and descriptions AWS documents
for DescribeInstanceHealth (classic) and DescribeTargetHealth (ELBv2), and the errors
moto does not answer as AWS does. The Stubber answers at botocore's `before-call`, so no
request is sent and nothing is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from flotilla.adapters.dynamodb_codec import CLIENT_CONFIG
from flotilla.adapters.elb_classic import ClassicLoadBalancer
from flotilla.adapters.elbv2 import TargetGroupLoadBalancer
from flotilla.engine.errors import ConfigurationError, FlotillaError, TransientError
from flotilla.engine.ports import TargetState
from tests.support.aws import REGION

INSTANCE = "i-0123456789abcdef0"
OTHER = "i-0fedcba9876543210"
ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef"


@pytest.fixture
def elb() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("elb", region_name=REGION, config=CLIENT_CONFIG)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def elbv2() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("elbv2", region_name=REGION, config=CLIENT_CONFIG)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


# Classic ELB: DescribeInstanceHealth.

HEALTH_REQUEST = {"LoadBalancerName": "web", "Instances": [{"InstanceId": INSTANCE}]}


def _instance_health(stubber: Stubber, state: str, reason: str, description: str) -> None:
    row = {
        "InstanceId": INSTANCE,
        "State": state,
        "ReasonCode": reason,
        "Description": description,
    }
    stubber.add_response("describe_instance_health", {"InstanceStates": [row]}, HEALTH_REQUEST)


@pytest.mark.parametrize(
    ("state", "reason", "description", "expected"),
    [
        ("InService", "N/A", "N/A", TargetState.HEALTHY),
        # Connection draining: AWS keeps saying InService while connections drain.
        ("InService", "N/A", "Instance deregistration currently in progress.", "draining"),
        ("OutOfService", "ELB", "Instance deregistration currently in progress.", "draining"),
        (
            "OutOfService",
            "ELB",
            "Instance is not currently registered with the LoadBalancer.",
            TargetState.UNUSED,
        ),
        ("OutOfService", "ELB", "Instance registration is still in progress.", "initial"),
        (
            "OutOfService",
            "Instance",
            "Instance has not passed the configured HealthyThreshold number of health checks "
            "consecutively.",
            TargetState.INITIAL,
        ),
        ("OutOfService", "Instance", "Instance is in pending state.", TargetState.INITIAL),
        (
            "OutOfService",
            "Instance",
            "Instance has failed at least the UnhealthyThreshold number of health checks "
            "consecutively.",
            TargetState.UNHEALTHY,
        ),
        ("OutOfService", "Instance", "Instance is in stopped state.", TargetState.UNHEALTHY),
        (
            "OutOfService",
            "ELB",
            "Instance is in the EC2 Availability Zone for which LoadBalancer is not configured "
            "to route traffic to.",
            TargetState.UNHEALTHY,
        ),
    ],
)
def test_classic_instance_health_maps_to_target_states(
    elb: tuple[Any, Stubber], state: str, reason: str, description: str, expected: str
) -> None:
    client, stubber = elb
    _instance_health(stubber, state, reason, description)
    assert ClassicLoadBalancer(client, "web").state(INSTANCE) is TargetState(expected)


def test_classic_transient_error_description_is_retryable(elb: tuple[Any, Stubber]) -> None:
    client, stubber = elb
    _instance_health(
        stubber, "Unknown", "N/A", "A transient error occurred. Please try again later."
    )
    with pytest.raises(TransientError) as failed:
        ClassicLoadBalancer(client, "web").state(INSTANCE)
    assert failed.value.retryable


@pytest.mark.parametrize(
    ("listed", "expected"), [([INSTANCE, OTHER], "unhealthy"), ([OTHER], "unused")]
)
def test_classic_unknown_state_asks_whether_the_instance_is_registered(
    elb: tuple[Any, Stubber], listed: list[str], expected: str
) -> None:
    client, stubber = elb
    _instance_health(stubber, "Unknown", "N/A", "N/A")
    stubber.add_response(
        "describe_load_balancers",
        {
            "LoadBalancerDescriptions": [
                {"LoadBalancerName": "web", "Instances": [{"InstanceId": i} for i in listed]}
            ]
        },
        {"LoadBalancerNames": ["web"]},
    )
    assert ClassicLoadBalancer(client, "web").state(INSTANCE) is TargetState(expected)


def test_classic_terminated_instance_left_out_of_the_answer_is_unused(
    elb: tuple[Any, Stubber],
) -> None:
    client, stubber = elb
    stubber.add_response("describe_instance_health", {"InstanceStates": []}, HEALTH_REQUEST)
    assert ClassicLoadBalancer(client, "web").state(INSTANCE) is TargetState.UNUSED


def test_classic_invalid_instance_is_unused_and_deregistered_but_not_registrable(
    elb: tuple[Any, Stubber],
) -> None:
    client, stubber = elb
    balancer = ClassicLoadBalancer(client, "web")
    for operation in (
        "describe_instance_health",
        "deregister_instances_from_load_balancer",
        "register_instances_with_load_balancer",
    ):
        stubber.add_client_error(
            operation, "InvalidInstance", "The specified endpoint is not valid."
        )
    assert balancer.state(INSTANCE) is TargetState.UNUSED
    balancer.deregister(INSTANCE)
    with pytest.raises(ConfigurationError) as refused:
        balancer.register(INSTANCE)
    assert INSTANCE in refused.value.message
    assert "'web'" in refused.value.message


def test_classic_unknown_load_balancer_on_every_call(elb: tuple[Any, Stubber]) -> None:
    """moto fails inside itself on register/deregister here; AWS answers LoadBalancerNotFound."""
    client, stubber = elb
    balancer = ClassicLoadBalancer(client, "no-such-elb")
    for operation in (
        "register_instances_with_load_balancer",
        "deregister_instances_from_load_balancer",
        "describe_instance_health",
    ):
        stubber.add_client_error(
            operation,
            "LoadBalancerNotFound",
            "There is no ACTIVE Load Balancer named 'no-such-elb'",
        )
    for call in (balancer.register, balancer.deregister, balancer.state):
        with pytest.raises(ConfigurationError) as missing:
            call(INSTANCE)
        assert "'no-such-elb'" in missing.value.message
        assert not missing.value.retryable


def test_an_unexpected_error_is_not_retryable_and_keeps_awss_words(
    elb: tuple[Any, Stubber],
) -> None:
    client, stubber = elb
    stubber.add_client_error(
        "register_instances_with_load_balancer", "InvalidConfigurationRequest", "no, because"
    )
    with pytest.raises(FlotillaError) as failed:
        ClassicLoadBalancer(client, "web").register(INSTANCE)
    assert type(failed.value) is FlotillaError
    assert not failed.value.retryable
    assert "InvalidConfigurationRequest: no, because" in failed.value.message


# ELBv2: DescribeTargetHealth.


def _row(state: str, port: int = 8080, instance: str = INSTANCE) -> dict[str, Any]:
    return {"Target": {"Id": instance, "Port": port}, "TargetHealth": {"State": state}}


def _target_health(
    stubber: Stubber, rows: list[dict[str, Any]], target: dict[str, Any] | None = None
) -> None:
    stubber.add_response(
        "describe_target_health",
        {"TargetHealthDescriptions": rows},
        {"TargetGroupArn": ARN, "Targets": [target or {"Id": INSTANCE}]},
    )


@pytest.mark.parametrize(
    ("aws_state", "expected"),
    [
        ("healthy", TargetState.HEALTHY),
        ("initial", TargetState.INITIAL),
        ("draining", TargetState.DRAINING),
        ("unhealthy", TargetState.UNHEALTHY),
        ("unhealthy.draining", TargetState.UNHEALTHY),
        ("unavailable", TargetState.UNHEALTHY),
        ("unused", TargetState.UNUSED),
    ],
)
def test_target_health_maps_to_target_states(
    elbv2: tuple[Any, Stubber], aws_state: str, expected: TargetState
) -> None:
    client, stubber = elbv2
    _target_health(stubber, [_row(aws_state)])
    assert TargetGroupLoadBalancer(client, ARN).state(INSTANCE) is expected


def test_a_state_this_version_does_not_know_is_never_drained_or_healthy(
    elbv2: tuple[Any, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    client, stubber = elbv2
    _target_health(stubber, [_row("resting")])
    with caplog.at_level(logging.WARNING):
        assert TargetGroupLoadBalancer(client, ARN).state(INSTANCE) is TargetState.UNHEALTHY
    assert "'resting'" in caplog.text


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["healthy", "unused"], TargetState.HEALTHY),
        (["healthy", "healthy"], TargetState.HEALTHY),
        (["healthy", "draining"], TargetState.DRAINING),
        (["initial", "healthy"], TargetState.INITIAL),
        (["draining", "unhealthy"], TargetState.UNHEALTHY),
        (["unused", "unused"], TargetState.UNUSED),
        ([], TargetState.UNUSED),
    ],
)
def test_without_a_port_every_registration_of_the_instance_counts(
    elbv2: tuple[Any, Stubber], states: list[str], expected: TargetState
) -> None:
    client, stubber = elbv2
    rows = [_row(state, port=8080 + n) for n, state in enumerate(states)]
    _target_health(stubber, [*rows, _row("draining", instance=OTHER)])
    assert TargetGroupLoadBalancer(client, ARN).state(INSTANCE) is expected


def test_with_a_port_only_that_registration_counts(elbv2: tuple[Any, Stubber]) -> None:
    client, stubber = elbv2
    target = {"Id": INSTANCE, "Port": 9000}
    stubber.add_response("register_targets", {}, {"TargetGroupArn": ARN, "Targets": [target]})
    _target_health(stubber, [_row("draining", port=8080), _row("healthy", port=9000)], target)
    balancer = TargetGroupLoadBalancer(client, ARN, port=9000)
    balancer.register(INSTANCE)
    assert balancer.state(INSTANCE) is TargetState.HEALTHY


def test_invalid_target_is_unused_and_deregistered_but_not_registrable(
    elbv2: tuple[Any, Stubber],
) -> None:
    client, stubber = elbv2
    balancer = TargetGroupLoadBalancer(client, ARN)
    for operation in ("describe_target_health", "deregister_targets", "register_targets"):
        stubber.add_client_error(operation, "InvalidTarget", "The specified target does not exist.")
    assert balancer.state(INSTANCE) is TargetState.UNUSED
    balancer.deregister(INSTANCE)
    with pytest.raises(ConfigurationError) as refused:
        balancer.register(INSTANCE)
    assert INSTANCE in refused.value.message
    assert ARN in refused.value.message


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("Throttling", 400, TransientError),
        ("ServiceUnavailable", 503, TransientError),
        ("SomethingNew", 502, TransientError),
        ("AccessDenied", 403, ConfigurationError),
        ("InvalidClientTokenId", 403, ConfigurationError),
        ("TargetGroupNotFound", 400, ConfigurationError),
    ],
)
def test_errors_are_translated_at_the_edge(
    elbv2: tuple[Any, Stubber], code: str, status: int, error: type[FlotillaError]
) -> None:
    client, stubber = elbv2
    stubber.add_client_error("describe_target_health", code, "answer", http_status_code=status)
    with pytest.raises(error) as failed:
        TargetGroupLoadBalancer(client, ARN).state(INSTANCE)
    assert failed.value.retryable is (error is TransientError)
    assert INSTANCE in failed.value.message
    assert isinstance(failed.value.__cause__, Exception)
