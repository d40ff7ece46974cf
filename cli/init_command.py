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

from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from flotilla.adapters.stacks import CloudFormationStacks, StackEvent
from flotilla.adapters.templates import ENVIRONMENT_TEMPLATE
from flotilla.cli.options import aws_options, wiring_from
from flotilla.cli.output import output_option
from flotilla.cli.stack_deploy import (
    apply_stack,
    deploy_stack,
    environment_stack_name,
    report_result,
    stack_parameters,
    subnet_list,
)
from flotilla.cli.wheel_options import (
    ARTIFACT_BUCKET_OUTPUT,
    ChosenWheel,
    WheelRequest,
    chosen_wheel,
    publish,
    publish_unless_dry_run,
    wheel_options,
    wheel_request,
)
from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import FlotillaError

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


@click.command(short_help="Create or update the environment's stack.")
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
    stacks = wiring.stacks
    # With no scheduler instance (they run elsewhere, as in the demo's), no instance of
    # this stack installs Flotilla: nothing to publish, and an editable install may run it.
    needs_no_wheel = scheduler_count == 0 and request == WheelRequest()
    with nullcontext() if needs_no_wheel else chosen_wheel(request, wiring) as chosen:
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
            store = None if bucket is None else wiring.artifacts(bucket)
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
    publish(wiring.artifacts(bucket), chosen, output)
    result = apply_stack(
        stacks, stack, ENVIRONMENT_TEMPLATE, parameters, output=output, events=events
    )
    report_result(stack, result, events, output, changed=first.changed or result.changed)
