"""`flotilla service provision NAME`: create or update the service's stack.

The stack `flotilla-<env>-<service>` (cfn_templates/service.yaml) holds the workers (launch
template with the agent, auto scaling group, least-privilege role) and the load balancer
the stored service record names, with the record's health check (or the fixed one):

- none: no load balancer;
- `classic:NAME`: a classic ELB of that name;
- `target_group:ARN`: a target group named as in the ARN. CloudFormation gives a new
  target group a new ARN, so once the stack is complete the service record is pointed at
  the stack's target group (a conditional write, like any other change of the service).

The service must exist (`flotilla service create`) and so must the environment's stack
(`flotilla init`): a worker's permissions are scoped to that stack's tables, key and
queue, and the workers' wheel (cli.wheel_options) is published to its artifact bucket
before the service's stack is pointed at it. Options left out keep the values the stack
already has; the wheel is always the one being published.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from flotilla.cli.options import aws_options, wiring_from
from flotilla.cli.output import output_option
from flotilla.cli.stack_deploy import (
    deploy_stack,
    environment_stack_name,
    stack_parameters,
    subnet_list,
)
from flotilla.cli.wheel_options import (
    ARTIFACT_BUCKET_OUTPUT,
    chosen_wheel,
    publish_unless_dry_run,
    wheel_options,
    wheel_request,
)
from flotilla.engine import validation
from flotilla.engine.errors import ConfigurationError, ValidationError
from flotilla.engine.operations.names import find_service
from flotilla.engine.records import LoadBalancerKind, LoadBalancerRef, Service
from flotilla.engine.updates import modify_service

SERVICE_TEMPLATE = "service.yaml"
# The load balancer's health check, always from the service's record (as its load
# balancer is): `service update --health-check` then `service provision` applies it.
HEALTH_CHECK_PARAMETERS = (
    "HealthCheckProtocol",
    "HealthCheckPort",
    "HealthCheckPath",
    "HealthyThreshold",
    "UnhealthyThreshold",
    "HealthCheckInterval",
    "HealthCheckTimeout",
)
SERVICE_PARAMETERS = (
    "EnvironmentName",
    "ServiceName",
    "LoadBalancerKind",
    "LoadBalancerName",
    "VpcId",
    "InstancePort",
    "Subnets",
    "InstanceType",
    "MinSize",
    "MaxSize",
    "FlotillaWheel",
    "FlotillaWheelSha256",
    "FlotillaRequirements",
    "FlotillaRequirementsSha256",
    "InstallDocker",
    *HEALTH_CHECK_PARAMETERS,
)


def service_stack_name(environment: str, service: str) -> str:
    return f"flotilla-{environment}-{service}"


def load_balancer_parameters(service: Service) -> dict[str, str]:
    """LoadBalancerKind and LoadBalancerName for the service's stack, from its record."""
    balancer = service.load_balancer
    if balancer is None:
        return {"LoadBalancerKind": "none", "LoadBalancerName": ""}
    if balancer.kind is LoadBalancerKind.CLASSIC:
        return {"LoadBalancerKind": "classic", "LoadBalancerName": balancer.name}
    # arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID
    name = balancer.name.split(":")[-1].split("/")[1]
    return {"LoadBalancerKind": "target_group", "LoadBalancerName": name}


def health_check_parameters(service: Service) -> dict[str, str]:
    """The health check's parameters for the service's stack, from its record; with none,
    empty protocol, port and path: the template's fixed check of before."""
    check = service.health_check
    if check is None:
        return dict.fromkeys(HEALTH_CHECK_PARAMETERS[:3], "") | {
            "HealthyThreshold": "2",
            "UnhealthyThreshold": "2",
            "HealthCheckInterval": "10",
            "HealthCheckTimeout": "5",
        }
    return {
        "HealthCheckProtocol": check.protocol.value,
        "HealthCheckPort": str(check.port),
        "HealthCheckPath": check.path or "",
        "HealthyThreshold": str(check.healthy_threshold),
        "UnhealthyThreshold": str(check.unhealthy_threshold),
        "HealthCheckInterval": str(check.interval_seconds),
        "HealthCheckTimeout": str(check.timeout_seconds),
    }


@click.command(short_help="Create or update a service's stack of workers.")
@click.argument("name")
@click.option(
    "--subnets", metavar="SUBNET,...", help="Subnets of the workers [default: default VPC]"
)
@click.option("--instance-type", help="Worker instance type [default: t3.micro]")
@click.option("--min", "min_size", type=click.IntRange(min=0), help="Fewest workers [default: 1]")
@click.option("--max", "max_size", type=click.IntRange(min=0), help="Most workers [default: 1]")
@click.option("--vpc-id", help="VPC of the target group (services with a target group)")
@click.option(
    "--instance-port",
    type=click.IntRange(1, 65535),
    help="Port the units listen on, for the load balancer [default: 80]",
)
@click.option(
    "--docker/--no-docker",
    default=None,
    help="Install and start docker on the workers, for revisions that run containers "
    "[default: no, or as before]",
)
@wheel_options
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing")
@output_option
@aws_options
def provision(
    name: str,
    subnets: str | None,
    instance_type: str | None,
    min_size: int | None,
    max_size: int | None,
    vpc_id: str | None,
    instance_port: int | None,
    docker: bool | None,
    wheel: Path | None,
    wheel_url: str | None,
    wheel_sha256: str | None,
    dry_run: bool,
    output: str,
    **options: Any,
) -> None:
    """Create or update the stack of service NAME (workers, load balancer) and wait.

    The workers install Flotilla from a wheel: by default the wheel of the Flotilla
    running this command, published to the environment's artifact bucket (or --wheel
    PATH, or --wheel-url with --wheel-sha256). Every run names the wheel it publishes;
    workers already running keep theirs until they are replaced. Every other option left
    out keeps the stack's current value (or the default).
    """
    validation.service_name(name)
    if (min_size is None) != (max_size is None):
        raise ValidationError("give --min and --max together")
    if min_size is not None and max_size is not None and min_size > max_size:
        raise ValidationError(f"--min {min_size} is more than --max {max_size}")
    if vpc_id is not None and not (vpc_id.startswith("vpc-") and vpc_id[4:].isalnum()):
        raise ValidationError(f"invalid --vpc-id {vpc_id[:40]!r}: expected vpc-<hex>")
    request = wheel_request(wheel, wheel_url, wheel_sha256)
    given = {
        "Subnets": subnet_list(subnets),
        "InstanceType": instance_type,
        "MinSize": None if min_size is None else str(min_size),
        "MaxSize": None if max_size is None else str(max_size),
        "VpcId": vpc_id,
        "InstancePort": None if instance_port is None else str(instance_port),
        "InstallDocker": None if docker is None else str(docker).lower(),
    }
    wiring = wiring_from(options)
    environment = wiring.settings.environment
    service = find_service(wiring.store, name, environment)
    stacks = wiring.stacks
    environment_stack = environment_stack_name(environment)
    if stacks.status(environment_stack) is None:
        raise ConfigurationError(
            f"environment {environment!r} has no stack {environment_stack!r}; "
            "create it first with `flotilla init`"
        )
    # Published there, and imported by the service's template (its workers' read grant).
    bucket = stacks.outputs(environment_stack).get(ARTIFACT_BUCKET_OUTPUT)
    if not bucket:
        raise ConfigurationError(
            f"the stack {environment_stack!r} has no artifact bucket ({ARTIFACT_BUCKET_OUTPUT}): "
            "run flotilla init first to create the artifact bucket"
        )
    stack = service_stack_name(environment, name)
    # The wheel's two parameters are always the chosen wheel's, filled in below.
    parameters = stack_parameters(
        stacks,
        stack,
        SERVICE_TEMPLATE,
        {
            **given,
            **load_balancer_parameters(service),
            **health_check_parameters(service),
            "EnvironmentName": environment,
            "ServiceName": name,
        },
        SERVICE_PARAMETERS,
    )
    if parameters["LoadBalancerKind"] == "target_group" and not parameters.get("VpcId"):
        raise ValidationError(
            f"service {name!r} has a target group: give its VPC with --vpc-id vpc-..."
        )
    with chosen_wheel(request, wiring) as chosen:
        parameters.update(chosen.parameters)
        publish_unless_dry_run(wiring.artifacts(bucket), chosen, dry_run=dry_run, output=output)
        result = deploy_stack(
            stacks, stack, SERVICE_TEMPLATE, parameters, dry_run=dry_run, output=output
        )
    arn = None if result is None else result.outputs.get("TargetGroupArn")
    balancer = service.load_balancer
    if arn and balancer is not None and balancer.name != arn:
        target_group = LoadBalancerRef(LoadBalancerKind.TARGET_GROUP, arn)

        def point_at_stack(current: Service) -> Service:
            # Only if nobody changed the load balancer meanwhile.
            if current.load_balancer != balancer:
                return current
            return replace(current, load_balancer=target_group)

        modify_service(wiring.store, name, point_at_stack)
        click.echo(f"service {name} now uses target group {arn}", err=output == "json")
