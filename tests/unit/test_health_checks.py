"""`--health-check` as written, its normal form, stored and read back, and what the agent
probes for which service (the refusals: tests/badinput/test_health_check_input.py)."""

from __future__ import annotations

import pytest

from flotilla.adapters.items import service_from_item, service_to_item
from flotilla.engine.deploy.probing import probe_target
from flotilla.engine.errors import SchemaError
from flotilla.engine.health_checks import parse_health_check
from flotilla.engine.ports import ProbeTarget
from flotilla.engine.records import (
    HealthCheck,
    HealthCheckProtocol,
    LoadBalancerKind,
    LoadBalancerRef,
    Service,
)

HTTP = HealthCheckProtocol.HTTP


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TCP:80", HealthCheck(HealthCheckProtocol.TCP, 80)),
        ("tcp:65535", HealthCheck(HealthCheckProtocol.TCP, 65535)),
        ("HTTP:8080/health", HealthCheck(HTTP, 8080, "/health")),
        ("http:1", HealthCheck(HTTP, 1, "/")),
        ("HTTP:80/", HealthCheck(HTTP, 80, "/")),
        (
            "HTTPS:443/ready?full=1&x=%20",
            HealthCheck(HealthCheckProtocol.HTTPS, 443, "/ready?full=1&x=%20"),
        ),
        ("default", None),
        ("NONE", None),
    ],
)
def test_good_health_checks_parse_to_their_normal_form(
    text: str, expected: HealthCheck | None
) -> None:
    assert parse_health_check(text) == expected
    if expected is not None:  # and print back as the option would be written
        assert parse_health_check(expected.text) == expected


def test_a_health_check_is_stored_and_read_back_whole() -> None:
    service = Service(
        "api",
        health_check=HealthCheck(HTTP, 8080, "/health", 3, 4, 30, 10),
        health_period_seconds=25,
    )
    item = service_to_item(service)
    assert service_from_item(item) == service
    command = Service("batch", health_command="pgrep -x batchd")
    assert service_from_item(service_to_item(command)) == command


def test_an_item_of_schema_3_reads_with_no_check_and_the_default_period() -> None:
    item = service_to_item(Service("api"))
    for key in ("health_check", "health_command", "health_period_seconds"):
        del item[key]
    read = service_from_item({**item, "schema": 3})
    assert (read.health_check, read.health_command, read.health_period_seconds) == (None, None, 10)


def test_a_stored_check_out_of_range_is_a_malformed_item() -> None:
    item = service_to_item(Service("api", health_check=HealthCheck(HTTP, 80, "/")))
    item["health_check"]["path"] = "no slash"
    with pytest.raises(SchemaError, match="path"):
        service_from_item(item)


def test_the_agent_probes_only_a_service_without_a_load_balancer() -> None:
    check = HealthCheck(HTTP, 8080, "/health")
    assert probe_target(Service("api")) is None
    assert probe_target(Service("api", health_check=check)) == ProbeTarget("http", 8080, "/health")
    tcp = HealthCheck(HealthCheckProtocol.TCP, 9000)
    assert probe_target(Service("api", health_check=tcp)) == ProbeTarget("tcp", 9000)
    assert probe_target(Service("api", health_command="true")) == ProbeTarget(
        "command", command="true"
    )
    balanced = LoadBalancerRef(LoadBalancerKind.CLASSIC, "api-elb")
    assert probe_target(Service("api", load_balancer=balanced, health_check=check)) is None
