"""`flotilla init`: create or update the environment's stack, `flotilla-<env>`.

The stack (cfn_templates/environment.yaml) holds the tables, the KMS key, the events
queue, the artifact bucket and the scheduler. Running `init` again is safe: an unchanged
stack is reported as up to date; options left out keep the values the stack already has.
`--dry-run` shows the change set CloudFormation would execute, and changes nothing.

An environment may span several regions (`--region A --region B`, the home region
first): each region has a stack of its own, so it works on when another is unreachable,
and each stack names every region (`EnvironmentRegions`, read by
`cli.environment_regions`). The wheel is chosen and its requirements pinned once; every
region's stack is read before any is changed (`cli.regions`), then each is published to
and deployed in order, its outcome said. init with a single region keeps the regions its
stack names; with several, it sets them.

The wheel the instances install (cli.wheel_options) is published to the stack's artifact
bucket before the stack is pointed at it. A stack without a bucket yet (a new one) is
deployed in two steps: first without schedulers and without a wheel (no scheduler can
boot without one), then, once the wheel is in the new bucket, with both.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from flotilla.adapters.stacks import CloudFormationStacks, StackEvent, StackResult
from flotilla.adapters.templates import ENVIRONMENT_TEMPLATE
from flotilla.cli.environment_regions import apply_everywhere
from flotilla.cli.options import aws_options_of_regions, given_regions, wiring_from
from flotilla.cli.output import output_option, print_json
from flotilla.cli.regions import in_region
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
from flotilla.engine.errors import FlotillaError, ValidationError

ENVIRONMENT_PARAMETERS = (
    "EnvironmentName",
    "SchedulerCount",
    "SchedulerSubnets",
    "SchedulerInstanceType",
    "FlotillaWheel",
    "FlotillaWheelSha256",
    "FlotillaRequirements",
    "FlotillaRequirementsSha256",
    "EnvironmentRegions",
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
@aws_options_of_regions
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

    With --region given more than once, the environment spans those regions, the first
    its home region: each gets a stack of its own (and its own copy of the wheel), and
    each stack names them all. Every region is read before any is changed; run the same
    command again to finish one that failed. With one --region, the stack keeps the
    regions it names.
    """
    request = wheel_request(wheel, wheel_url, wheel_sha256)
    given = {
        "SchedulerCount": None if scheduler_count is None else str(scheduler_count),
        "SchedulerSubnets": subnet_list(subnets),
        "SchedulerInstanceType": instance_type,
    }
    regions = given_regions(options)
    if len(regions) > 1 and subnets is not None:
        raise ValidationError(
            "--subnets names subnets of one region: give it with that region's --region "
            "alone (init with one region keeps the regions the stack names)"
        )
    wiring = wiring_from(options)
    if len(regions) > 1:
        given["EnvironmentRegions"] = ",".join(regions)
    # With no scheduler instance (they run elsewhere, as in the demo's), no instance of
    # this stack installs Flotilla: nothing to publish, and an editable install may run it.
    needs_no_wheel = scheduler_count == 0 and request == WheelRequest()
    with nullcontext() if needs_no_wheel else chosen_wheel(request, wiring) as chosen:
        if len(regions) <= 1:
            apply_region(stage_region(wiring, given, chosen), chosen, dry_run, output)
            return
        # Staged (`cli.regions`): every region read, and refused, before any is changed.
        staged = [
            in_region(region, stage_region, wiring.in_region(region), given, chosen)
            for region in regions
        ]
        documents: list[dict[str, Any]] | None = [] if output == "json" else None
        plans = {plan.region: plan for plan in staged}
        apply_everywhere(
            regions,
            lambda region: apply_region(plans[region], chosen, dry_run, output, documents),
            lambda outcome: outcome,
            output,
        )
        if documents is not None:  # one document for scripts: every region's
            print_json(
                {"regions": [{"region": r, **d} for r, d in zip(regions, documents, strict=True)]}
            )


@dataclass(frozen=True)
class StagedRegion:
    """What `init` read of one region before changing any."""

    wiring: Wiring
    stack: str
    parameters: dict[str, str]
    bucket: str | None  # the stack's artifact bucket; None without one (or without a wheel)

    @property
    def region(self) -> str:
        return self.wiring.region


def stage_region(
    wiring: Wiring, given: Mapping[str, str | None], chosen: ChosenWheel | None
) -> StagedRegion:
    """The region's stack parameters (as given, else as the stack has them) and bucket."""
    environment = wiring.settings.environment
    stack = environment_stack_name(environment)
    stacks = wiring.stacks
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
    bucket = None if chosen is None else artifact_bucket(stacks, stack)
    return StagedRegion(wiring, stack, parameters, bucket)


def apply_region(
    plan: StagedRegion,
    chosen: ChosenWheel | None,
    dry_run: bool,
    output: str,
    documents: list[dict[str, Any]] | None = None,
) -> str:
    """Publish the wheel to the region's bucket and deploy (or preview) its stack; what
    happened, in a few words."""
    stacks, stack = plan.wiring.stacks, plan.stack
    if chosen is not None:
        if plan.bucket is None and chosen.path is not None and not dry_run:
            made = create_then_publish(
                stacks, stack, plan.parameters, chosen, plan.wiring, output, documents
            )
            return f"stack {stack}: {made.status}"
        store = None if plan.bucket is None else plan.wiring.artifacts(plan.bucket)
        publish_unless_dry_run(store, chosen, dry_run=dry_run, output=output)
    result = deploy_stack(
        stacks,
        stack,
        ENVIRONMENT_TEMPLATE,
        plan.parameters,
        dry_run=dry_run,
        output=output,
        documents=documents,
    )
    if result is None:
        return f"stack {stack}: previewed; nothing changed"
    if result.changed:
        return f"stack {stack}: {result.status}"
    return f"stack {stack}: up to date"


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
    documents: list[dict[str, Any]] | None = None,
) -> StackResult:
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
    changed = first.changed or result.changed
    report_result(stack, result, events, output, changed=changed, documents=documents)
    return result
