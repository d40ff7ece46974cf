"""`flotilla service create|update|show|list|delete`: a service's settings and weights.

Every change is validated before it is written, and written conditionally on the
version it was based on (`engine.updates`), so a bad option stores nothing and two
operators never overwrite each other's changes.

`delete` of a service none of whose instances runs or is assigned anything deletes the
record at once. Otherwise it marks the service as being deleted: the scheduler assigns
every instance no revision, their agents leave the load balancer and stop and remove
their units, and the scheduler deletes the record once they are done
(`service_deletion`). A service being deleted cannot be changed (`engine.updates`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import click

from flotilla.cli.follow import follow_options
from flotilla.cli.health_options import (
    health_changes,
    health_fields,
    health_options,
    health_summary,
    options_alone,
)
from flotilla.cli.notify import notify_scheduler
from flotilla.cli.options import aws_options, aws_options_of_regions, given_regions, wiring_from
from flotilla.cli.output import output_option, print_fields, print_json, print_table
from flotilla.cli.policy_options import (
    check_alarms_exist,
    policy_changes,
    policy_fields,
    policy_options,
    policy_summary,
)
from flotilla.cli.service_deletion import delete_service
from flotilla.cli.service_everywhere import create_everywhere, delete_everywhere, update_everywhere
from flotilla.engine import validation
from flotilla.engine.errors import ValidationError
from flotilla.engine.operations.names import find_service, label_of, weights_text
from flotilla.engine.ports import StateStore
from flotilla.engine.records import FailureAction, LoadBalancerKind, LoadBalancerRef, Service
from flotilla.engine.updates import modify_service

F = TypeVar("F", bound=Callable[..., Any])


def parse_load_balancer(text: str) -> LoadBalancerRef | None:
    """`classic:NAME`, `target_group:ARN` or `none`."""
    if text.strip().lower() == "none":
        return None
    kind, colon, name = text.partition(":")
    kinds = {k.value: k for k in LoadBalancerKind}
    if not colon or kind not in kinds or not name:
        raise ValidationError(
            f"invalid --load-balancer {text[:80]!r}: give classic:NAME, target_group:ARN or none"
        )
    return validation.load_balancer(LoadBalancerRef(kinds[kind], name))


def settings_options(*, creating: bool) -> Callable[[F], F]:
    """The options create and update share. `create` fills in a default for each one left
    out (said in its help); `update` leaves a setting that is not given as it is, so its
    help shows no default: it would claim a change that does not happen."""

    def default(text: str) -> str:
        return f"[default: {text}]" if creating else "[unchanged if not given]"

    options = [
        click.option(
            "--load-balancer",
            metavar="classic:NAME|target_group:ARN|none",
            help="Load balancer that instances leave while they upgrade " + default("none"),
        ),
        click.option("--drain-timeout", type=int, metavar="SECONDS", help=default("300")),
        click.option("--health-timeout", type=int, metavar="SECONDS", help=default("300")),
        click.option(
            "--settle",
            type=int,
            metavar="SECONDS",
            help="How long units must stay active to count as healthy " + default("5"),
        ),
        click.option(
            "--max-in-flight",
            metavar="N|P%",
            help="Instances deploying at once: a count or a share " + default("1"),
        ),
        click.option(
            "--max-failures",
            type=int,
            metavar="N",
            help="Failed deploys before a rollout stops " + default("1"),
        ),
        click.option(
            "--failure-action",
            type=click.Choice([a.value for a in FailureAction]),
            help="When a rollout fails: revert to the last good weights, or hold (pause, "
            "keep what runs) " + default("revert"),
        ),
        click.option(
            "--auto-revert/--no-auto-revert",
            default=None,
            help="Older spelling of --failure-action revert / hold",
        ),
        *health_options(default),
        *policy_options(default),
    ]

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def apply_settings(service: Service, options: dict[str, Any]) -> Service:
    """The service with every given option applied; a pure function of both."""
    changes: dict[str, Any] = {}
    if options["load_balancer"] is not None:
        changes["load_balancer"] = parse_load_balancer(options["load_balancer"])
    for option, attribute in (
        ("drain_timeout", "drain_timeout_seconds"),
        ("health_timeout", "health_timeout_seconds"),
        ("settle", "settle_seconds"),
    ):
        if options[option] is not None:
            changes[attribute] = options[option]
    changes.update(health_changes(replace(service, **changes), options))
    rollout: dict[str, Any] = {}
    if options["max_in_flight"] is not None:
        rollout["max_in_flight"] = validation.max_in_flight(options["max_in_flight"])
    if options["max_failures"] is not None:
        rollout["max_failures"] = options["max_failures"]
    if options["auto_revert"] is not None:
        rollout["failure_action"] = (
            FailureAction.REVERT if options["auto_revert"] else FailureAction.HOLD
        )
    if options["failure_action"] is not None:
        rollout["failure_action"] = FailureAction(options["failure_action"])
    rollout.update(policy_changes(options))
    if rollout:
        changes["rollout"] = replace(service.rollout, **rollout)
    return validation.service(replace(service, **changes))


def service_summary(service: Service, labels: Mapping[str, str]) -> dict[str, Any]:
    """What `show` and `list` report: settings, policy and weights (no secrets live here).
    Weights are keyed by revision id, as scripts need; `labels` names the weighted ones."""
    balancer = service.load_balancer
    return {
        "name": service.name,
        "load_balancer": None
        if balancer is None
        else {"kind": balancer.kind.value, "name": balancer.name},
        "drain_timeout_seconds": service.drain_timeout_seconds,
        "health_timeout_seconds": service.health_timeout_seconds,
        "settle_seconds": service.settle_seconds,
        **health_summary(service),
        "rollout_policy": policy_summary(service.rollout),
        "weights": dict(service.weights),
        "labels": {rev: label_of(labels, rev) for rev in sorted(service.weights)},
        "paused": service.paused,
        "version": service.version,
        "created_at": service.created_at.isoformat() if service.created_at else None,
        "updated_at": service.updated_at.isoformat() if service.updated_at else None,
        "deleting_since": service.deleting_since.isoformat() if service.deleting_since else None,
        "regions": list(service.regions),
    }


def _state(service: Service) -> str:
    """`active`, or `being deleted` (its instances are being unassigned)."""
    return "being deleted" if service.deleting else "active"


def _balancer_text(service: Service) -> str:
    balancer = service.load_balancer
    return "none" if balancer is None else f"{balancer.kind.value}:{balancer.name}"


def _labels(store: StateStore, service: Service) -> dict[str, str]:
    """Revision id -> label of the service's revisions (read only when it has weights)."""
    if not service.weights:
        return {}
    return {r.id: r.label for r in store.list_revisions(service.name)}


def _show(service: Service, labels: Mapping[str, str], output: str) -> None:
    if output == "json":
        print_json(service_summary(service, labels))
        return
    print_fields(
        [
            ("name", service.name),
            ("load balancer", _balancer_text(service)),
            ("drain timeout", f"{service.drain_timeout_seconds}s"),
            ("health timeout", f"{service.health_timeout_seconds}s"),
            ("settle", f"{service.settle_seconds}s"),
            *health_fields(service),
            *policy_fields(service.rollout),
            ("weights", weights_text(service.weights, labels)),
            ("paused", "yes" if service.paused else "no"),
            ("version", service.version),
            *([("regions", ", ".join(service.regions))] if service.regions else []),
            *_deletion_fields(service),
        ]
    )


def _deletion_fields(service: Service) -> list[tuple[str, Any]]:
    if service.deleting_since is None:
        return []
    since = service.deleting_since.strftime("%Y-%m-%d %H:%M:%S UTC")
    return [
        (
            "being deleted",
            f"since {since}: its instances are being unassigned; the record goes when none "
            f"runs anything (`flotilla rollout status {service.name}` shows them)",
        )
    ]


@click.group(short_help="Create, change, show, list and delete services.")
def service() -> None:
    """Create, change, show, list and delete services."""


@service.command(short_help="Create a service.")
@click.argument("name")
@settings_options(creating=True)
@output_option
@aws_options_of_regions
def create(name: str, output: str, **options: Any) -> None:
    """Create the service NAME (it runs nothing until a revision gets a weight).

    With --region given more than once, NAME exists in each of those regions, the first
    its home region (where a rollout in waves keeps its progress): revisions are added
    to each, and `flotilla weights --waves` rolls out region by region. Every region is
    checked before any is written; run the command again to finish one that failed.
    """
    record = apply_settings(Service(name=validation.service_name(name)), options)
    regions = given_regions(options)
    wiring = wiring_from(options)
    if len(regions) > 1:
        _show(create_everywhere(wiring, record, regions, output), {}, output)
        return
    check_alarms_exist(wiring, record.rollout.alarms, name)
    stored = wiring.store.create_service(record)
    _show(stored, {}, output)


@service.command(short_help="Change some settings of a service.")
@click.argument("name")
@settings_options(creating=False)
@output_option
@aws_options
def update(name: str, output: str, **options: Any) -> None:
    """Change the given settings of NAME; the others stay as they are. A service of
    several regions gets them in every region (each region checked before any changes);
    each region keeps its own weights and rollout."""
    validation.service_name(name)
    # Bad options fail before any AWS call (the health check's tuning, on the stored check).
    given = apply_settings(Service(name=name), options_alone(options))
    wiring = wiring_from(options)
    if options["alarms"]:  # only alarms named now are looked up; stored ones were checked
        check_alarms_exist(wiring, given.rollout.alarms, name)
    current = find_service(wiring.store, name, wiring.settings.environment)
    if len(current.regions) > 1:  # every region's record gets the settings
        home, _ = update_everywhere(
            wiring, name, lambda record: apply_settings(record, options),
            given.rollout.alarms if options["alarms"] else (),
        )  # fmt: skip
        _show(home, _labels(wiring.in_region(current.regions[0]).store, home), output)
        return
    stored = modify_service(
        wiring.store, name, lambda record: apply_settings(record, options), current=current
    )
    if stored.version != current.version:
        notify_scheduler(wiring, name)  # a new rollout policy applies from the next pass
    _show(stored, _labels(wiring.store, stored), output)


@service.command(short_help="Show a service's settings and weights.")
@click.argument("name")
@output_option
@aws_options
def show(name: str, output: str, **options: Any) -> None:
    """Show NAME's settings, rollout policy and weights."""
    wiring = wiring_from(options)
    found = find_service(wiring.store, name, wiring.settings.environment)
    _show(found, _labels(wiring.store, found), output)


@service.command(name="list", short_help="List every service of the environment.")
@output_option
@aws_options
def list_(output: str, **options: Any) -> None:
    """List every service of the environment."""
    store = wiring_from(options).store
    services = store.list_services()
    labels = {s.name: _labels(store, s) for s in services}
    if output == "json":
        print_json([service_summary(s, labels[s.name]) for s in services])
        return
    print_table(
        ["NAME", "LOAD BALANCER", "MAX IN FLIGHT", "WEIGHTS", "VERSION", "STATE"],
        [
            [
                s.name,
                _balancer_text(s),
                s.rollout.max_in_flight,
                weights_text(s.weights, labels[s.name]),
                s.version,
                _state(s),
            ]
            for s in services
        ],
    )


@service.command(short_help="Delete a service, unassigning its instances first.")
@click.argument("name")
@click.option(
    "--expected-version",
    type=click.IntRange(min=1),
    help="Delete only if the service is still at this version [default: the version read now]",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Then wait until the record is deleted, saying how many instances are still being "
    "unassigned (exit 1 if an unassignment failed or --timeout passed)",
)
@follow_options
@aws_options
def delete(
    name: str,
    expected_version: int | None,
    wait: bool,
    interval: float,
    timeout: float,
    **options: Any,
) -> None:
    """Delete the service NAME. Its instances are first unassigned: each agent leaves the
    load balancer and stops and removes the service's units, then the scheduler deletes the
    record. A service none of whose instances runs anything is deleted at once. Until it is
    gone it cannot be changed; its revisions and instance records are left as they are.
    A service of several regions is deleted in each of them (every region reached first).
    """
    wiring = wiring_from(options)
    current = find_service(wiring.store, name, wiring.settings.environment)
    if len(current.regions) > 1:
        if expected_version is not None:
            raise ValidationError(
                f"--expected-version is one region's: {name} is in "
                f"{', '.join(current.regions)}, each with its own version; leave it out"
            )
        delete_everywhere(
            wiring, name, current.regions, wait=wait, interval=interval, timeout=timeout
        )
        return
    delete_service(
        wiring,
        name,
        expected_version=expected_version,
        wait=wait,
        interval=interval,
        timeout=timeout,
    )
