"""The service's health check reaches the template's load balancers through parameters.

The template is resolved as CloudFormation would (the worker policy test's resolver) with
the parameters `flotilla service provision` passes for a service record: with no health
check, the fixed check of before; with one, its protocol, port, path and thresholds. The
same stack created in moto is tested in tests/integration/test_templates.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from flotilla.adapters.templates import load_template
from flotilla.cli.provision_command import (
    HEALTH_CHECK_PARAMETERS,
    SERVICE_PARAMETERS,
    health_check_parameters,
)
from flotilla.engine.health_checks import parse_health_check
from flotilla.engine.records import (
    HealthCheck,
    HealthCheckProtocol,
    LoadBalancerKind,
    LoadBalancerRef,
    Service,
)
from tests.unit.test_worker_policy import ENV, SERVICE, Resolver

TARGET_GROUP = LoadBalancerRef(
    LoadBalancerKind.TARGET_GROUP,
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api-tg/0123456789abcdef",
)
CLASSIC = LoadBalancerRef(LoadBalancerKind.CLASSIC, "api-elb")


def resolved(service: Service, resource: str, **extra: str) -> dict[str, Any]:
    """The resource's properties for `service`'s stack, as CloudFormation would see them."""
    kind = "none" if service.load_balancer is None else service.load_balancer.kind.value
    parameters = {
        "EnvironmentName": ENV,
        "ServiceName": SERVICE,
        "LoadBalancerKind": kind,
        "LoadBalancerName": {"none": "", "classic": "api-elb", "target_group": "api-tg"}[kind],
        "VpcId": "vpc-0123abcd" if kind == "target_group" else "",
        **health_check_parameters(service),
        **extra,
    }
    template = load_template("service.yaml")
    body: dict[str, Any] = template["Resources"][resource]
    resolver = Resolver(template, parameters)
    assert resolver.conditions[body["Condition"]], f"{resource} is not created"
    properties: dict[str, Any] = resolver.resolve(body["Properties"])
    return properties


def test_without_a_health_check_the_checks_are_the_fixed_ones_of_before() -> None:
    classic = resolved(Service("api", load_balancer=CLASSIC), "ClassicLoadBalancer")
    assert classic["HealthCheck"] == {
        "Target": "TCP:80",
        "HealthyThreshold": "2",
        "UnhealthyThreshold": "2",
        "Interval": "10",
        "Timeout": "5",
    }
    on_8080 = resolved(
        Service("api", load_balancer=CLASSIC), "ClassicLoadBalancer", InstancePort="8080"
    )
    assert on_8080["HealthCheck"]["Target"] == "TCP:8080"
    group = resolved(Service("api", load_balancer=TARGET_GROUP), "TargetGroup")
    checked = {k: str(v) for k, v in group.items() if "health" in k.lower()}
    assert checked == {
        "HealthCheckProtocol": "HTTP",
        "HealthCheckPort": "traffic-port",
        "HealthCheckPath": "/",
        "HealthyThresholdCount": "2",
        "UnhealthyThresholdCount": "2",
        "HealthCheckIntervalSeconds": "10",
        "HealthCheckTimeoutSeconds": "5",
    }


def test_an_http_path_and_thresholds_reach_both_kinds_of_load_balancer() -> None:
    check = HealthCheck(HealthCheckProtocol.HTTP, 8080, "/health?deep=1", 3, 4, 30, 10)
    classic = resolved(
        Service("api", load_balancer=CLASSIC, health_check=check), "ClassicLoadBalancer"
    )
    assert classic["HealthCheck"] == {
        "Target": "HTTP:8080/health?deep=1",
        "HealthyThreshold": "3",
        "UnhealthyThreshold": "4",
        "Interval": "30",
        "Timeout": "10",
    }
    group = resolved(Service("api", load_balancer=TARGET_GROUP, health_check=check), "TargetGroup")
    checked = {k: str(v) for k, v in group.items() if "health" in k.lower()}
    assert checked == {
        "HealthCheckProtocol": "HTTP",
        "HealthCheckPort": "8080",
        "HealthCheckPath": "/health?deep=1",
        "HealthyThresholdCount": "3",
        "UnhealthyThresholdCount": "4",
        "HealthCheckIntervalSeconds": "30",
        "HealthCheckTimeoutSeconds": "10",
    }


@pytest.mark.parametrize(
    ("given", "target"),
    [("TCP:9000", "TCP:9000"), ("https:8443/ready", "HTTPS:8443/ready"), ("HTTP:81", "HTTP:81/")],
)
def test_the_classic_target_is_the_option_as_written(given: str, target: str) -> None:
    service = Service("api", load_balancer=CLASSIC, health_check=parse_health_check(given))
    assert resolved(service, "ClassicLoadBalancer")["HealthCheck"]["Target"] == target


def test_every_parameter_passed_is_declared_and_the_defaults_agree() -> None:
    declared = load_template("service.yaml")["Parameters"]
    assert set(HEALTH_CHECK_PARAMETERS) <= set(SERVICE_PARAMETERS)
    defaults = {name: str(declared[name]["Default"]) for name in HEALTH_CHECK_PARAMETERS}
    # No check in the record: exactly the template's defaults, so a stack provisioned
    # before keeps its check; and the record's own defaults are the same numbers.
    assert health_check_parameters(Service("api")) == defaults
    explicit = health_check_parameters(
        Service("api", health_check=HealthCheck(HealthCheckProtocol.TCP, 80))
    )
    assert {k: v for k, v in explicit.items() if "Threshold" in k or "Interval" in k} == {
        k: v for k, v in defaults.items() if "Threshold" in k or "Interval" in k
    }
    assert explicit["HealthCheckTimeout"] == defaults["HealthCheckTimeout"]
