"""A service's health check as `service create|update` take it and `service show` prints it.

`--health-check PROTO:PORT/path` with its thresholds is the load balancer's check (passed
to the service's stack by `service provision`), or, for a service without a load balancer,
what the agent probes on its instance; `--health-command` is the agent's other probe.
Every rule is in engine/health_checks.py; a bad option is one line and nothing is stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import click

from flotilla.engine import health_checks
from flotilla.engine.errors import ValidationError
from flotilla.engine.records import DEFAULT_HEALTH_PERIOD, HealthCheck, LoadBalancerKind, Service

F = TypeVar("F", bound=Callable[..., Any])

# option -> HealthCheck field, for the tuning options
_TUNING = {
    "healthy_threshold": "healthy_threshold",
    "unhealthy_threshold": "unhealthy_threshold",
    "health_interval": "interval_seconds",
    "health_check_timeout": "timeout_seconds",
}


def health_options(default: Callable[[str], str]) -> list[Callable[[F], F]]:
    """The options; `default` words the default (create) or "unchanged" (update)."""
    return [
        click.option(
            "--health-check",
            metavar="PROTO:PORT[/PATH]",
            help="The load balancer's health check, TCP:PORT, HTTP:PORT/path, HTTPS:PORT/path "
            "or default; without one, what the agent probes on "
            "127.0.0.1 before a deploy counts as healthy "
            + default(
                "default: TCP on the "
                "instance port (classic ELB), HTTP / (target group), no probe (no load balancer)"
            ),
        ),
        click.option(
            "--healthy-threshold",
            type=int,
            metavar="N",
            help="Passes in a row before the load balancer counts an instance healthy, 2-10 "
            + default("2"),
        ),
        click.option(
            "--unhealthy-threshold",
            type=int,
            metavar="N",
            help="Failures in a row before it counts one unhealthy, 2-10 " + default("2"),
        ),
        click.option(
            "--health-interval",
            type=int,
            metavar="SECONDS",
            help="Between two load-balancer checks, 5-300 " + default("10"),
        ),
        click.option(
            "--health-check-timeout",
            type=int,
            metavar="SECONDS",
            help="How long one check may take, 2-60 and less than the interval (also the "
            "agent's probe timeout) " + default("5"),
        ),
        click.option(
            "--health-command",
            metavar="COMMAND|none",
            help="Without a load balancer: the agent's probe, a command; exit status 0 "
            "passes (stored in the clear: no secrets in it) " + default("none"),
        ),
        click.option(
            "--health-period",
            type=int,
            metavar="SECONDS",
            help="How long the agent's probe must pass without a break, within the health "
            "timeout " + default(str(DEFAULT_HEALTH_PERIOD)),
        ),
    ]


def health_changes(service: Service, options: dict[str, Any]) -> dict[str, Any]:
    """The `Service` fields the given options set, each validated (the whole record is
    checked again by `validation.service`)."""
    changes: dict[str, Any] = {}
    check = service.health_check
    if options["health_check"] is not None:
        parsed = health_checks.parse_health_check(options["health_check"])
        # A new target keeps the tuning chosen before.
        if parsed is not None and check is not None:
            parsed = replace(check, protocol=parsed.protocol, port=parsed.port, path=parsed.path)
        check = changes["health_check"] = parsed
    tuning = {
        field: options[option] for option, field in _TUNING.items() if options[option] is not None
    }
    if tuning:
        if check is None:
            raise ValidationError(
                "the thresholds, interval and timeout tune a health check given with "
                "--health-check PROTO:PORT/path: give it too"
            )
        changes["health_check"] = health_checks.health_check(replace(check, **tuning))
    if options["health_command"] is not None:
        command = options["health_command"]
        none = command.strip().lower() == "none"
        changes["health_command"] = None if none else health_checks.health_command(command)
    if options["health_period"] is not None:
        changes["health_period_seconds"] = options["health_period"]
    return changes


def options_alone(options: dict[str, Any]) -> dict[str, Any]:
    """The options to check before the stored service is read: its tuning is checked on
    the stored health check (which it may tune without naming it), so is left out here."""
    return {**options, **dict.fromkeys(_TUNING)}


def check_text(service: Service) -> str:
    """`HTTP:8080/health (healthy 2, unhealthy 2, every 10 s, timeout 5 s)`, or the
    template's fixed check, or what the agent does without a load balancer."""
    check = service.health_check
    if check is not None:
        return (
            f"{check.text} (healthy {check.healthy_threshold}, unhealthy "
            f"{check.unhealthy_threshold}, every {check.interval_seconds} s, timeout "
            f"{check.timeout_seconds} s)"
        )
    balancer = service.load_balancer
    if balancer is None:
        return "none (units active through the settle period)"
    if balancer.kind is LoadBalancerKind.CLASSIC:
        return "default (TCP on the instance port)"
    return "default (HTTP / on the traffic port)"


def health_fields(service: Service) -> list[tuple[str, Any]]:
    """`service show`'s lines."""
    fields: list[tuple[str, Any]] = [("health check", check_text(service))]
    if service.load_balancer is None:
        fields.append(("health command", service.health_command or "none"))
        fields.append(("health period", f"{service.health_period_seconds}s"))
    return fields


def health_summary(service: Service) -> dict[str, Any]:
    """`service show -o json`'s fields."""
    check: HealthCheck | None = service.health_check
    return {
        "health_check": None if check is None else dataclasses.asdict(check),
        "health_command": service.health_command,
        "health_period_seconds": service.health_period_seconds,
    }
