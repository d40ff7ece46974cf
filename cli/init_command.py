"""`flotilla init`: create or update the environment's stack, `flotilla-<env>`.

The stack (cfn_templates/environment.yaml) holds the tables, the KMS key, the events
queue, the artifact bucket and the scheduler. Running `init` again is safe: an unchanged
stack is reported as up to date; options left out keep the values the stack already has.
`--dry-run` shows the change set CloudFormation would execute, and changes nothing.

The wheel the instances install (cli.wheel_options) is published to the stack's artifact
bucket before the stack is pointed at it. A stack without a bucket yet (a new one) is
deployed in two steps: first without schedulers and without a wheel (no scheduler can
boot without one), then, once the wheel is in the new bucket, with both.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from flotilla.adapters.stacks import (
    CloudFormationStacks,
    StackChange,
    StackEvent,
    StackResult,
    change_summary,
)
from flotilla.adapters.templates import ENVIRONMENT_TEMPLATE, load_template, template_text
from flotilla.cli.options import aws_options
from flotilla.cli.output import output_option, print_json, print_table
from flotilla.cli.service_commands import wiring_from
from flotilla.cli.wheel_options import (
    ARTIFACT_BUCKET_OUTPUT,
    ChosenWheel,
    WheelRequest,
    artifacts_from,
    chosen_wheel,
    publish,
    publish_unless_dry_run,
    wheel_options,
    wheel_request,
)
from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import FlotillaError, ValidationError


def environment_stack_name(environment: str) -> str:
    return f"flotilla-{environment}"


def stacks_from(wiring: Wiring) -> CloudFormationStacks:
    return CloudFormationStacks(wiring.client("cloudformation"), wiring.clock)


def stack_parameters(
    stacks: CloudFormationStacks,
    stack: str,
    template: str,
    given: Mapping[str, str | None],
    managed: Collection[str],
) -> dict[str, str]:
    """Every managed parameter: as given, else as the stack has it, else the default.

    All are passed explicitly, so an option left out never resets a value chosen before,
    and the same command run twice sends the same parameters (nothing to change).
    """
    declared: dict[str, Any] = load_template(template)["Parameters"]
    current = stacks.parameters(stack)
    values: dict[str, str] = {}
    for key in managed:
        chosen = given.get(key)
        if chosen is not None:
            values[key] = chosen
        elif key in current:
            values[key] = _list_value(current[key])
        elif "Default" in declared[key]:
            values[key] = str(declared[key]["Default"])
    return values


def _list_value(value: str) -> str:
    """A CommaDelimitedList's current value as CloudFormation takes it: `a,b`.

    moto describes such a parameter as a Python list (`['a', 'b']`); AWS as `a,b`.
    """
    if value.startswith("[") and value.endswith("]"):
        parsed = ast.literal_eval(value)
        if isinstance(parsed, list):
            return ",".join(str(item) for item in parsed)
    return value


def subnet_list(text: str | None) -> str | None:
    """`subnet-a,subnet-b` (spaces allowed), checked for shape; None stays None."""
    if text is None:
        return None
    subnets = [part.strip() for part in text.split(",") if part.strip()]
    for subnet in subnets:
        if not subnet.startswith("subnet-") or not subnet[7:].isalnum():
            raise ValidationError(f"invalid subnet id {subnet[:40]!r}: expected subnet-<hex>")
    return ",".join(subnets)


def print_event(event: StackEvent, *, err: bool = False) -> None:
    reason = f"  {event.reason}" if event.reason else ""
    click.echo(f"{event.resource}  {event.resource_type}  {event.status}{reason}", err=err)


def changes_json(changes: list[StackChange]) -> list[dict[str, Any]]:
    return [
        {
            "action": c.action,
            "resource": c.resource,
            "type": c.resource_type,
            "replacement": c.replacement,
        }
        for c in changes
    ]


def report_preview(
    stack: str, existed: bool, changes: list[StackChange] | None, output: str
) -> None:
    if output == "json":
        print_json(
            {
                "stack": stack,
                "dry_run": True,
                "exists": existed,
                "changed": changes is not None,
                "changes": changes_json(changes or []),
            }
        )
        return
    if changes is None:
        click.echo(f"stack {stack} is up to date: nothing would change")
        return
    verb = "update" if existed else "create"
    if not changes:
        click.echo(f"would {verb} stack {stack}: parameters or outputs only, no resource")
        return
    click.echo(f"would {verb} stack {stack}: {change_summary(changes)}")
    print_table(
        ["ACTION", "RESOURCE", "TYPE", "REPLACEMENT"],
        [[c.action, c.resource, c.resource_type, c.replacement or ""] for c in changes],
    )


def deploy_stack(
    stacks: CloudFormationStacks,
    stack: str,
    template: str,
    parameters: Mapping[str, str],
    *,
    dry_run: bool,
    output: str,
) -> StackResult | None:
    """Preview or deploy `stack`, printing progress; the result (None for a dry run)."""
    if dry_run:
        existed = stacks.status(stack) is not None
        changes = stacks.preview(stack, template_text(template), parameters)
        report_preview(stack, existed, changes, output)
        return None
    events: list[StackEvent] = []
    result = apply_stack(stacks, stack, template, parameters, output=output, events=events)
    report_result(stack, result, events, output)
    return result


def apply_stack(
    stacks: CloudFormationStacks,
    stack: str,
    template: str,
    parameters: Mapping[str, str],
    *,
    output: str,
    events: list[StackEvent],
) -> StackResult:
    """Deploy `stack` and wait, printing each event as it comes and adding it to `events`."""

    # Progress goes to stdout for people; with --output json to stderr, so stdout stays JSON.
    def on_event(event: StackEvent) -> None:
        events.append(event)
        print_event(event, err=output == "json")

    return stacks.deploy(stack, template_text(template), parameters, on_event)


def report_result(
    stack: str,
    result: StackResult,
    events: list[StackEvent],
    output: str,
    *,
    changed: bool | None = None,
) -> None:
    """The outcome: one line for people, one JSON document for scripts."""
    changed = result.changed if changed is None else changed
    if output == "json":
        print_json(
            {
                "stack": stack,
                "status": result.status,
                "changed": changed,
                "changes": changes_json(result.changes),
                "events": [
                    {
                        "resource": e.resource,
                        "type": e.resource_type,
                        "status": e.status,
                        "reason": e.reason,
                    }
                    for e in events
                ],
                "outputs": result.outputs,
            }
        )
    elif changed and result.changes:
        click.echo(f"stack {stack}: {result.status} ({change_summary(result.changes)})")
    elif changed:  # created, or only parameters or outputs changed
        click.echo(f"stack {stack}: {result.status}")
    else:
        click.echo(f"stack {stack} is up to date ({result.status}): nothing to change")


ENVIRONMENT_PARAMETERS = (
    "EnvironmentName",
    "SchedulerCount",
    "SchedulerSubnets",
    "SchedulerInstanceType",
    "FlotillaWheel",
    "FlotillaWheelSha256",
    "FlotillaRequirements",
    "FlotillaRequirementsSha256",
)
# The first step of a stack that has no artifact bucket yet: no scheduler boots without
# its wheel (the template's rule SchedulersNeedAWheel), and the wheel needs the bucket.
NO_WHEEL = {
    "FlotillaWheel": "",
    "FlotillaWheelSha256": "",
    "FlotillaRequirements": "",
    "FlotillaRequirementsSha256": "",
}
WITHOUT_WHEEL = {"SchedulerCount": "0", **NO_WHEEL}


@click.command()
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing")
@click.option(
    "--scheduler-count",
    type=click.IntRange(0, 3),
    help="Scheduler instances (0 runs none) [default: 1, or as before]",
)
@click.option(
    "--subnets",
    metavar="SUBNET,...",
    help="Subnets of the scheduler instances [default: the default VPC, or as before]",
)
@click.option("--instance-type", help="Scheduler instance type [default: t3.micro, or as before]")
@wheel_options
@output_option
@aws_options
def init(
    dry_run: bool,
    scheduler_count: int | None,
    subnets: str | None,
    instance_type: str | None,
    wheel: Path | None,
    wheel_url: str | None,
    wheel_sha256: str | None,
    output: str,
    **options: Any,
) -> None:
    """Create or update this environment's stack (tables, key, queue, artifact bucket,
    scheduler) and wait.

    The scheduler instances install Flotilla from a wheel: by default the wheel of the
    Flotilla running this command, published to the environment's artifact bucket (or
    --wheel PATH, or --wheel-url with --wheel-sha256). Every run names the wheel it
    publishes, so running init again after upgrading Flotilla upgrades what new instances
    install; instances already running keep theirs until they are replaced. Other options
    left out keep the stack's current values.
    """
    request = wheel_request(wheel, wheel_url, wheel_sha256)
    given = {
        "SchedulerCount": None if scheduler_count is None else str(scheduler_count),
        "SchedulerSubnets": subnet_list(subnets),
        "SchedulerInstanceType": instance_type,
    }
    wiring = wiring_from(options)
    environment = wiring.settings.environment
    stack = environment_stack_name(environment)
    stacks = stacks_from(wiring)
    # With no scheduler instance (they run elsewhere, as in the demo's), no instance of
    # this stack installs Flotilla: nothing to publish, and an editable install may run it.
    needs_no_wheel = scheduler_count == 0 and request == WheelRequest()
    with nullcontext() if needs_no_wheel else chosen_wheel(request) as chosen:
        parameters = stack_parameters(
            stacks,
            stack,
            ENVIRONMENT_TEMPLATE,
            {
                **given,
                **(NO_WHEEL if chosen is None else chosen.parameters),
                "EnvironmentName": environment,
            },
            ENVIRONMENT_PARAMETERS,
        )
        if chosen is not None:
            bucket = artifact_bucket(stacks, stack)
            if bucket is None and chosen.path is not None and not dry_run:
                create_then_publish(stacks, stack, parameters, chosen, wiring, output)
                return
            store = None if bucket is None else artifacts_from(wiring, bucket)
            publish_unless_dry_run(store, chosen, dry_run=dry_run, output=output)
        deploy_stack(
            stacks, stack, ENVIRONMENT_TEMPLATE, parameters, dry_run=dry_run, output=output
        )


def artifact_bucket(stacks: CloudFormationStacks, stack: str) -> str | None:
    """The stack's artifact bucket; None if there is no stack, or it has no bucket yet."""
    if stacks.status(stack) is None:
        return None
    return stacks.outputs(stack).get(ARTIFACT_BUCKET_OUTPUT) or None


def create_then_publish(
    stacks: CloudFormationStacks,
    stack: str,
    parameters: Mapping[str, str],
    chosen: ChosenWheel,
    wiring: Wiring,
    output: str,
) -> None:
    """The bucket is part of the stack: make the stack without schedulers, publish the
    wheel to its new bucket, then give the stack its scheduler count and the wheel."""
    existed = stacks.status(stack) is not None
    click.echo(
        f"stack {stack} has no artifact bucket yet: "
        + ("updating" if existed else "creating")
        + " it without schedulers first"
        + (" (its schedulers stop until the wheel is published)" if existed else "")
        + ", then publishing the wheel",
        err=output == "json",
    )
    events: list[StackEvent] = []
    first = apply_stack(
        stacks, stack, ENVIRONMENT_TEMPLATE, {**parameters, **WITHOUT_WHEEL}, output=output,
        events=events,
    )  # fmt: skip
    click.echo(f"stack {stack}: {first.status} (no schedulers yet)", err=output == "json")
    bucket = first.outputs.get(ARTIFACT_BUCKET_OUTPUT)
    if not bucket:
        raise FlotillaError(
            f"stack {stack} has no output {ARTIFACT_BUCKET_OUTPUT} after its update: is "
            "its template this Flotilla's?"
        )
    publish(artifacts_from(wiring, bucket), chosen, output)
    result = apply_stack(
        stacks, stack, ENVIRONMENT_TEMPLATE, parameters, output=output, events=events
    )
    report_result(stack, result, events, output, changed=first.changed or result.changed)
