"""A service's health check: what a user may give (`--health-check PROTO:PORT/path`, its
thresholds, `--health-command`, `--health-period`), with its load balancer or without.

The rules are kept here rather than in engine/validation.py (whose `service` calls
`service_health`) because they are one subject of their own, and validation.py is
already at the size its docstring allows. What the agent probes is decided in
engine/deploy/probing.py.

The ranges are the intersection of what a classic ELB and an ELBv2 target group accept
(the template passes the same values to either): healthy and unhealthy thresholds 2-10,
interval 5-300 s, timeout 2-60 s and shorter than the interval, a path of at most 1024
characters.
"""

from __future__ import annotations

import re
from typing import Any

from flotilla.engine.errors import ValidationError
from flotilla.engine.records import (
    HealthCheck,
    HealthCheckProtocol,
    LoadBalancerKind,
    LoadBalancerRef,
    Service,
)

HEALTH_CHECK_HELP = (
    "give TCP:PORT, HTTP:PORT/path or HTTPS:PORT/path (e.g. HTTP:8080/health), or default"
)
THRESHOLDS = (2, 10)  # healthy and unhealthy, both kinds of load balancer
INTERVAL_SECONDS = (5, 300)
TIMEOUT_SECONDS = (2, 60)  # a target group takes up to 120, a classic ELB 60
MAX_PATH = 1024
MAX_COMMAND = 1024
MAX_PERIOD_SECONDS = 3600
# A path is printable ASCII without spaces: it is sent as is in the request line, and ends
# up in a CloudFormation parameter and the classic ELB's `Target`.
_PATH = re.compile(r"/[!-~]*")
_PORT = re.compile(r"[0-9]{1,5}")
# A command is one line of printable characters (no control characters: no newline to
# smuggle a second line into logs).
_COMMAND = re.compile(r"[^\x00-\x1f\x7f]+")


def parse_health_check(text: str) -> HealthCheck | None:
    """`TCP:80`, `HTTP:8080/health`, `HTTPS:443/` (protocol in any case); `default` (or
    `none`) for the template's fixed check. Thresholds are left at their defaults."""
    if text.strip().lower() in ("default", "none"):
        return None
    shown = _show(text)
    protocol_text, colon, rest = text.partition(":")
    protocols = {p.value: p for p in HealthCheckProtocol}
    protocol = protocols.get(protocol_text.strip().upper())
    if not colon or protocol is None:
        raise ValidationError(
            f"invalid --health-check {shown}: the protocol must be TCP, HTTP or HTTPS; "
            + HEALTH_CHECK_HELP
        )
    port_text, slash, path = rest.partition("/")
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise ValidationError(
            f"invalid --health-check {shown}: the port must be a number from 1 to 65535; "
            + HEALTH_CHECK_HELP
        )
    if protocol is HealthCheckProtocol.TCP:
        if slash:
            raise ValidationError(
                f"invalid --health-check {shown}: a TCP check takes no path; give TCP:PORT, "
                "or HTTP:PORT/path to check a path"
            )
        return health_check(HealthCheck(protocol, int(port_text)))
    return health_check(HealthCheck(protocol, int(port_text), "/" + path if slash else "/"))


def health_check(check: HealthCheck) -> HealthCheck:
    """A whole health check, as parsed or as an API caller built it."""
    if not isinstance(check.protocol, HealthCheckProtocol):
        raise ValidationError(f"invalid health check protocol {_show(check.protocol)}")
    if isinstance(check.port, bool) or not isinstance(check.port, int):
        raise ValidationError(f"invalid health check port {_show(check.port)}")
    if not 1 <= check.port <= 65535:
        raise ValidationError(
            f"invalid health check port {check.port}: give a port from 1 to 65535"
        )
    if check.protocol is HealthCheckProtocol.TCP and check.path is not None:
        raise ValidationError("a TCP health check takes no path: give TCP:PORT")
    if check.path is not None and (
        not isinstance(check.path, str)
        or len(check.path) > MAX_PATH
        or not _PATH.fullmatch(check.path)
    ):
        raise ValidationError(
            f"invalid health check path {_show(check.path)}: it must start with / and hold "
            f"at most {MAX_PATH} printable characters, without spaces (encode one as %20)"
        )
    _in_range("healthy threshold", check.healthy_threshold, THRESHOLDS, "passes")
    _in_range("unhealthy threshold", check.unhealthy_threshold, THRESHOLDS, "failures")
    _in_range("health check interval", check.interval_seconds, INTERVAL_SECONDS, "seconds")
    _in_range("health check timeout", check.timeout_seconds, TIMEOUT_SECONDS, "seconds")
    if check.timeout_seconds >= check.interval_seconds:
        raise ValidationError(
            f"health check timeout {check.timeout_seconds} s is not shorter than its interval "
            f"{check.interval_seconds} s: AWS requires a shorter timeout; lower "
            "--health-check-timeout or raise --health-interval"
        )
    return check


def health_command(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_COMMAND:
        raise ValidationError(
            "invalid --health-command: give a command line of 1 to "
            f"{MAX_COMMAND} characters (exit status 0 passes), or none"
        )
    if not _COMMAND.fullmatch(value):
        raise ValidationError(
            "invalid --health-command: it holds a control character (a newline, a tab?); "
            "give one line of printable characters"
        )
    return value


def service_health(record: Service) -> Service:
    """The health settings of a whole service, together with its load balancer."""
    balancer: LoadBalancerRef | None = record.load_balancer
    if record.health_check is not None:
        health_check(record.health_check)
        if (
            balancer is not None
            and balancer.kind is LoadBalancerKind.TARGET_GROUP
            and record.health_check.protocol is HealthCheckProtocol.TCP
        ):
            raise ValidationError(
                f"service {record.name!r} has a target group, whose targets take HTTP: its "
                "health check must be HTTP:PORT/path or HTTPS:PORT/path, not TCP"
            )
    if record.health_command is not None:
        health_command(record.health_command)
        if balancer is not None:
            raise ValidationError(
                f"service {record.name!r} has a load balancer, which checks its instances: "
                "--health-command is for services without one; give --health-check "
                "instead, or --health-command none"
            )
        if record.health_check is not None:
            raise ValidationError(
                f"service {record.name!r} would have both a health check and a health "
                "command: the agent probes one; give --health-check default or "
                "--health-command none"
            )
    period = record.health_period_seconds
    if isinstance(period, bool) or not isinstance(period, int):
        raise ValidationError(f"invalid health period {_show(period)}")
    _in_range("health period", period, (0, MAX_PERIOD_SECONDS), "seconds", "")
    probed = balancer is None and (record.health_check or record.health_command) is not None
    if probed and period > record.health_timeout_seconds:
        raise ValidationError(
            f"health period {period} s is longer than the health timeout "
            f"{record.health_timeout_seconds} s: the agent's probe could never pass in time; "
            "lower --health-period or raise --health-timeout"
        )
    return record


def _in_range(
    what: str, value: Any, bounds: tuple[int, int], unit: str, why: str = " (what AWS accepts)"
) -> None:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(
            f"invalid {what} {_show(value)}: give whole {unit} from {low} to {high}{why}"
        )


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
