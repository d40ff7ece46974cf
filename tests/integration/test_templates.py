"""`flotilla init` and `flotilla service provision` create real stacks in moto's CloudFormation.

The console script runs against a moto server, as an operator would run it. moto creates
the resources a stack names (tables, queue, key, artifact bucket, roles, launch templates,
auto scaling groups, ELBs, target groups) but ignores TTL and draining settings, the
templates' Rules and CreationPolicy signals, and never evaluates IAM policies: what the
policies allow is tested in tests/unit/test_worker_policy.py. The CLI runs from the
editable install, so every init and provision here publishes a small synthetic wheel
(publishing itself: tests/integration/test_wheels.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from flotilla.adapters.templates import create_tables
from tests.support.aws import REGION, moto_server
from tests.support.aws_cli import Cli
from tests.support.wheels import synthetic_wheel

EXPECTED_TABLES = {"services", "revisions", "instances", "deploys", "locks", "users"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The wheel every `init` and `provision` here publishes."""
    return str(synthetic_wheel(tmp_path_factory.mktemp("wheel")))


@pytest.fixture(scope="module")
def env(endpoint: str, wheel: str) -> Cli:
    """An environment made by `flotilla init`, for the service tests."""
    cli = Cli(endpoint, f"svc{os.getpid()}")
    cli.ok("init", "--wheel", wheel)
    return cli


def test_init_without_schedulers_needs_no_wheel_even_from_an_editable_install(
    endpoint: str,
) -> None:
    """The demo's way: its schedulers are local processes, so nothing is published."""
    cli = Cli(endpoint, f"nosched{os.getpid()}")
    cli.ok("init", "--scheduler-count", "0")
    parameters = cli.parameters(f"flotilla-{cli.environment}")
    assert parameters["SchedulerCount"] == "0"
    assert (parameters["FlotillaWheel"], parameters["FlotillaWheelSha256"]) == ("", "")
    assert cli.objects() == {}
    # With schedulers, this editable install must say which wheel they get.
    refused = cli.run("init", "--scheduler-count", "1")
    assert refused.returncode != 0
    assert "editable install" in refused.stderr
    assert cli.parameters(f"flotilla-{cli.environment}")["SchedulerCount"] == "0"


def test_init_dry_run_then_create_then_nothing_to_change(endpoint: str, wheel: str) -> None:
    cli = Cli(endpoint, f"init{os.getpid()}")
    stack_name = f"flotilla-{cli.environment}"

    preview = cli.ok("init", "--wheel", wheel, "--dry-run")
    assert f"would create stack {stack_name}" in preview
    assert "ServicesTable" in preview
    assert "SchedulerGroup" in preview
    assert cli.stack(stack_name) is None  # not even an empty REVIEW_IN_PROGRESS stack
    assert not [
        t for t in cli.client("dynamodb").list_tables()["TableNames"] if cli.environment in t
    ]

    # Made without schedulers first (the bucket for their wheel is part of the stack),
    # then given the wheel and its scheduler.
    created = cli.ok("init", "--wheel", wheel)
    assert f"stack {stack_name}: CREATE_COMPLETE (no schedulers yet)" in created
    assert "UPDATE_COMPLETE" in created.splitlines()[-1]
    stack = cli.stack(stack_name)
    assert stack is not None
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    sha256 = hashlib.sha256(Path(wheel).read_bytes()).hexdigest()
    assert cli.parameters(stack_name)["FlotillaWheel"] == f"wheels/{sha256}/{Path(wheel).name}"
    assert cli.parameters(stack_name)["FlotillaWheelSha256"] == sha256
    # Its pinned requirements beside it (none for this wheel), named by their own sha256.
    lock_key = cli.parameters(stack_name)["FlotillaRequirements"]
    lock = cli.object_bytes(lock_key)
    lock_sha256 = hashlib.sha256(lock).hexdigest()
    assert lock_key == f"wheels/{lock_sha256}/requirements.txt"
    assert cli.parameters(stack_name)["FlotillaRequirementsSha256"] == lock_sha256
    assert lock.decode().startswith("# Pinned by Flotilla for ")
    resources = cli.resources(stack_name)

    tables = set(cli.client("dynamodb").list_tables()["TableNames"])
    assert {f"flotilla-{cli.environment}-{t}" for t in EXPECTED_TABLES} <= tables
    queues = cli.client("sqs").list_queues(QueueNamePrefix=f"flotilla-{cli.environment}-")
    assert len(queues["QueueUrls"]) == 2  # events and its dead-letter queue
    role = cli.client("iam").get_role(RoleName=resources["SchedulerRole"])["Role"]
    assert "ec2.amazonaws.com" in json.dumps(role["AssumeRolePolicyDocument"])
    profile = cli.client("iam").get_instance_profile(
        InstanceProfileName=resources["SchedulerInstanceProfile"]
    )["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [resources["SchedulerRole"]]
    (group,) = cli.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[f"flotilla-{cli.environment}-scheduler"]
    )["AutoScalingGroups"]
    assert group["LaunchTemplate"]["LaunchTemplateId"] == resources["SchedulerLaunchTemplate"]
    assert group["DesiredCapacity"] == 1
    aliases = cli.client("kms").list_aliases()["Aliases"]
    assert f"alias/flotilla-{cli.environment}" in {a["AliasName"] for a in aliases}
    # The events topic (docs/events.md), given out as an output for subscribers.
    topics = {t["TopicArn"] for t in cli.client("sns").list_topics()["Topics"]}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["EventsTopicArn"] in topics
    assert outputs["EventsTopicArn"].endswith(f":flotilla-{cli.environment}-events")

    # Again: nothing to change, and CloudFormation is not even asked to update.
    events = cli.events(stack_name)
    again = cli.ok("init", "--wheel", wheel)
    assert "up to date" in again
    assert cli.events(stack_name) == events
    assert "nothing would change" in cli.ok("init", "--wheel", wheel, "--dry-run")

    # A dry run of a real change shows it and changes nothing.
    parameters = cli.stack(stack_name)["Parameters"]  # type: ignore[index]
    preview = json.loads(
        cli.ok("init", "--wheel", wheel, "--dry-run", "--scheduler-count", "0", "-o", "json")
    )
    assert preview["dry_run"] is True
    assert preview["changed"] is True
    assert cli.stack(stack_name)["Parameters"] == parameters  # type: ignore[index]
    assert cli.events(stack_name) == events

    # The change itself; a later init without the option keeps it.
    changed = json.loads(cli.ok("init", "--wheel", wheel, "--scheduler-count", "0", "-o", "json"))
    assert changed["changed"] is True
    assert changed["status"] == "UPDATE_COMPLETE"
    (group,) = cli.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[f"flotilla-{cli.environment}-scheduler"]
    )["AutoScalingGroups"]
    assert group["DesiredCapacity"] == 0
    assert "up to date" in cli.ok("init", "--wheel", wheel)
    (group,) = cli.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[f"flotilla-{cli.environment}-scheduler"]
    )["AutoScalingGroups"]
    assert group["DesiredCapacity"] == 0


def test_provision_a_service_with_a_classic_elb(env: Cli, wheel: str) -> None:
    env.ok("service", "create", "web", "--load-balancer", "classic:web-elb")
    output = env.ok("service", "provision", "web", "--wheel", wheel, "--min", "2", "--max", "3")
    stack_name = f"flotilla-{env.environment}-web"
    assert "CREATE_COMPLETE" in output
    resources = env.resources(stack_name)
    assert "TargetGroup" not in resources

    (elb,) = env.client("elb").describe_load_balancers(LoadBalancerNames=["web-elb"])[
        "LoadBalancerDescriptions"
    ]
    assert elb["ListenerDescriptions"][0]["Listener"]["InstancePort"] == 80
    # The group is not attached to the ELB: the agent registers its instance when healthy.
    (group,) = env.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[stack_name]
    )["AutoScalingGroups"]
    assert (group["MinSize"], group["MaxSize"]) == (2, 3)
    assert group["LoadBalancerNames"] == []
    assert group["LaunchTemplate"]["LaunchTemplateId"] == resources["WorkerLaunchTemplate"]
    assert {t["Key"]: t["Value"] for t in group["Tags"]}["flotilla:service"] == "web"
    policy = env.client("iam").get_role_policy(
        RoleName=resources["WorkerRole"], PolicyName="flotilla-worker"
    )["PolicyDocument"]
    assert ":loadbalancer/web-elb" in json.dumps(policy)
    assert resources["WorkerInstanceProfile"]

    # The user data installs and starts the agent.
    template = env.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=resources["WorkerLaunchTemplate"]
    )["LaunchTemplateVersions"][0]
    user_data = base64.b64decode(template["LaunchTemplateData"]["UserData"]).decode()
    assert "FLOTILLA_SERVICE=web" in user_data
    assert "systemctl start flotilla-agent" in user_data
    # The environment's wheel, from the environment's bucket.
    environment = env.parameters(env.environment_stack)
    assert f"wheel='{environment['FlotillaWheel']}'" in user_data
    assert f"wheel_sha256='{environment['FlotillaWheelSha256']}'" in user_data
    assert f"bucket='{env.bucket()}'" in user_data

    # Again, without options: the sizes are kept, nothing changes.
    events = env.events(stack_name)
    assert "up to date" in env.ok("service", "provision", "web", "--wheel", wheel)
    assert env.events(stack_name) == events


def test_provision_a_service_with_a_target_group_points_the_service_at_it(
    env: Cli, wheel: str
) -> None:
    placeholder = f"arn:aws:elasticloadbalancing:{REGION}:123456789012:targetgroup/api-tg/" + (
        "0" * 16
    )
    env.ok("service", "create", "api", "--load-balancer", f"target_group:{placeholder}")
    refused = env.run("service", "provision", "api", "--wheel", wheel)
    assert refused.returncode == 2
    assert "--vpc-id" in refused.stderr
    assert env.stack(f"flotilla-{env.environment}-api") is None

    vpc = env.client("ec2").describe_vpcs()["Vpcs"][0]["VpcId"]
    env.ok("service", "provision", "api", "--wheel", wheel, "--vpc-id", vpc)
    resources = env.resources(f"flotilla-{env.environment}-api")
    arn = resources["TargetGroup"]
    (group,) = env.client("elbv2").describe_target_groups(TargetGroupArns=[arn])["TargetGroups"]
    assert group["TargetGroupName"] == "api-tg"
    shown = json.loads(env.ok("service", "show", "api", "-o", "json"))
    assert shown["load_balancer"] == {"kind": "target_group", "name": arn}
    assert "ClassicLoadBalancer" not in resources


def test_an_http_health_check_reaches_the_classic_elb_and_a_target_group(
    env: Cli, wheel: str
) -> None:
    """`--health-check HTTP:PORT/path` with its thresholds, as moto's ELB and ELBv2 report
    them back; changed later by `service update` then `service provision`."""
    env.ok(
        "service",
        "create",
        "checked",
        "--load-balancer",
        "classic:checked-elb",
        "--health-check",
        "HTTP:8080/health",
        "--healthy-threshold",
        "3",
        "--health-interval",
        "20",
    )
    shown = json.loads(env.ok("service", "show", "checked", "-o", "json"))
    assert shown["health_check"]["path"] == "/health"
    env.ok("service", "provision", "checked", "--wheel", wheel)
    elb = env.client("elb")
    (described,) = elb.describe_load_balancers(LoadBalancerNames=["checked-elb"])[
        "LoadBalancerDescriptions"
    ]
    assert described["HealthCheck"] == {
        "Target": "HTTP:8080/health",
        "HealthyThreshold": 3,
        "UnhealthyThreshold": 2,
        "Interval": 20,
        "Timeout": 5,
    }
    env.ok("service", "update", "checked", "--health-check", "TCP:8080")
    env.ok("service", "provision", "checked", "--wheel", wheel)
    (described,) = elb.describe_load_balancers(LoadBalancerNames=["checked-elb"])[
        "LoadBalancerDescriptions"
    ]
    # A new target keeps the tuning chosen before.
    assert described["HealthCheck"]["Target"] == "TCP:8080"
    assert described["HealthCheck"]["HealthyThreshold"] == 3

    placeholder = f"arn:aws:elasticloadbalancing:{REGION}:123456789012:targetgroup/tg-checked/" + (
        "0" * 16
    )
    env.ok(
        "service",
        "create",
        "tgchecked",
        "--load-balancer",
        f"target_group:{placeholder}",
        "--health-check",
        "HTTP:8081/ready",
        "--unhealthy-threshold",
        "5",
        "--health-check-timeout",
        "4",
    )
    vpc = env.client("ec2").describe_vpcs()["Vpcs"][0]["VpcId"]
    env.ok("service", "provision", "tgchecked", "--wheel", wheel, "--vpc-id", vpc)
    arn = env.resources(f"flotilla-{env.environment}-tgchecked")["TargetGroup"]
    (group,) = env.client("elbv2").describe_target_groups(TargetGroupArns=[arn])["TargetGroups"]
    assert {
        k: v for k, v in group.items() if "health" in k.lower() and k != "HealthCheckEnabled"
    } == {
        "HealthCheckProtocol": "HTTP",
        "HealthCheckPort": "8081",
        "HealthCheckPath": "/ready",
        "HealthCheckIntervalSeconds": 10,
        "HealthCheckTimeoutSeconds": 4,
        "HealthyThresholdCount": 2,
        "UnhealthyThresholdCount": 5,
    }


def test_a_bad_health_check_is_refused_in_one_line_and_nothing_is_stored(env: Cli) -> None:
    for args, words in [
        (("--health-check", "HTTP:8080/a b"), "without spaces"),
        (("--health-check", "TCP:80/x"), "takes no path"),
        (("--health-check", "UDP:53"), "TCP, HTTP or HTTPS"),
        (("--health-check", "HTTP:70000/"), "1 to 65535"),
        (("--health-check", "HTTP:80/", "--healthy-threshold", "11"), "from 2 to 10"),
        (("--healthy-threshold", "3"), "give it too"),
        (("--load-balancer", "classic:x-elb", "--health-command", "true"), "without one"),
    ]:
        refused = env.run("service", "create", "refused", *args)
        assert refused.returncode != 0, args
        assert words in refused.stderr, (args, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "Traceback" not in refused.stderr
    assert env.run("service", "show", "refused").returncode != 0  # never created


def test_provision_a_service_without_load_balancer(env: Cli, wheel: str) -> None:
    env.ok("service", "create", "batch")
    result = json.loads(env.ok("service", "provision", "batch", "--wheel", wheel, "-o", "json"))
    assert result["status"] == "CREATE_COMPLETE"
    resources = env.resources(f"flotilla-{env.environment}-batch")
    assert set(resources) == {
        "WorkerRole",
        "WorkerInstanceProfile",
        "WorkerLaunchTemplate",
        "WorkerGroup",
    }


def test_provisioning_an_unknown_service_fails_in_one_line_and_creates_nothing(
    env: Cli, wheel: str
) -> None:
    result = env.run("service", "provision", "nosuch", "--wheel", wheel)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "'nosuch' does not exist" in lines[0]
    assert env.stack(f"flotilla-{env.environment}-nosuch") is None


def test_a_wheel_whose_dependency_is_not_installed_here_is_refused_before_any_change(
    endpoint: str, tmp_path: Path
) -> None:
    """Its lock could not pin what the operator runs: one line, no stack, no upload."""
    cli = Cli(endpoint, f"nolock{os.getpid()}")
    wheel = synthetic_wheel(tmp_path, requires=("flotilla-no-such-dependency>=1",))
    buckets = cli.bucket_names()
    result = cli.run("init", "--wheel", str(wheel))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: the wheel needs flotilla-no-such-dependency>=1, which is not installed here: "
        "install the wheel here (pip install WHEEL) so its dependencies are pinned to what you run"
    ]
    assert cli.stack(f"flotilla-{cli.environment}") is None
    assert cli.bucket_names() == buckets


def test_provisioning_before_init_says_to_run_init(endpoint: str, wheel: str) -> None:
    """Tables made without the stack, the way DynamoDB Local gets them."""
    cli = Cli(endpoint, f"noinit{os.getpid()}")
    create_tables(cli.client("dynamodb"), cli.environment)
    cli.ok("service", "create", "lonely")
    result = cli.run("service", "provision", "lonely", "--wheel", wheel)
    assert result.returncode == 1, result.stderr
    assert "flotilla init" in result.stderr
    assert cli.stack(f"flotilla-{cli.environment}-lonely") is None


# --- the stacks adapter's answers that moto cannot produce: a scripted client ------------


class ScriptedCloudFormation:
    """Answers DescribeStacks from a script of statuses; events appear as statuses pass."""

    def __init__(self, statuses: list[str], events: list[dict[str, Any]]) -> None:
        self.statuses = statuses
        self.events = events  # oldest first; one more becomes visible per DescribeStacks
        self.visible = 0
        self.calls: list[str] = []

    def _error(self, operation: str, code: str, message: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": message}}, operation)

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        self.calls.append("describe_stacks")
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status == "MISSING":
            raise self._error(
                "DescribeStacks", "ValidationError", f"Stack with id {StackName} does not exist"
            )
        if status == "THROTTLED":
            raise self._error("DescribeStacks", "Throttling", "Rate exceeded")
        self.visible = min(self.visible + 1, len(self.events))
        return {"Stacks": [{"StackName": StackName, "StackStatus": status, "Parameters": []}]}

    def describe_stack_events(self, StackName: str) -> dict[str, Any]:
        return {"StackEvents": list(reversed(self.events[: self.visible]))}

    def create_stack(self, **_: Any) -> dict[str, Any]:
        self.calls.append("create_stack")
        return {"StackId": "id"}

    def create_change_set(self, **_: Any) -> dict[str, Any]:
        self.calls.append("create_change_set")
        return {"Id": "cs"}

    def describe_change_set(self, **_: Any) -> dict[str, Any]:
        return {"Status": "CREATE_COMPLETE", "Changes": []}

    def delete_change_set(self, **_: Any) -> None:
        self.calls.append("delete_change_set")

    def update_stack(self, **_: Any) -> None:
        self.calls.append("update_stack")
        raise self._error("UpdateStack", "ValidationError", "No updates are to be performed.")


def _event(number: int, resource: str, status: str, reason: str | None = None) -> dict[str, Any]:
    event = {"EventId": str(number), "LogicalResourceId": resource, "ResourceStatus": status}
    event["ResourceType"] = (
        "AWS::DynamoDB::Table" if resource != "stack" else "AWS::CloudFormation::Stack"
    )
    if reason:
        event["ResourceStatusReason"] = reason
    return event


def _stacks(client: ScriptedCloudFormation) -> Any:
    from flotilla.adapters.stacks import CloudFormationStacks
    from flotilla.engine.clock import FakeClock

    return CloudFormationStacks(client, FakeClock(), poll_seconds=5)


def test_a_stack_that_rolls_back_fails_with_the_first_resource_and_its_reason() -> None:
    from flotilla.engine.errors import FlotillaError

    events = [
        _event(1, "stack", "CREATE_IN_PROGRESS"),
        _event(2, "Table", "CREATE_FAILED", "Table already exists: flotilla-x-services"),
        _event(3, "stack", "ROLLBACK_IN_PROGRESS", "The following resource(s) failed"),
        _event(4, "stack", "ROLLBACK_COMPLETE"),
    ]
    statuses = [
        "MISSING",
        "CREATE_IN_PROGRESS",
        "CREATE_IN_PROGRESS",
        "ROLLBACK_IN_PROGRESS",
        "ROLLBACK_COMPLETE",
    ]
    client = ScriptedCloudFormation(statuses, events)
    seen: list[str] = []
    with pytest.raises(FlotillaError) as failure:
        _stacks(client).deploy(
            "flotilla-x", "{}", {}, lambda e: seen.append(f"{e.resource} {e.status}")
        )
    assert "ROLLBACK_COMPLETE" in failure.value.message
    assert "Table CREATE_FAILED: Table already exists" in failure.value.message
    assert seen == [
        "stack CREATE_IN_PROGRESS",
        "Table CREATE_FAILED",
        "stack ROLLBACK_IN_PROGRESS",
        "stack ROLLBACK_COMPLETE",
    ]


def test_a_stack_that_failed_to_create_must_be_deleted_first() -> None:
    from flotilla.engine.errors import ConfigurationError

    client = ScriptedCloudFormation(["ROLLBACK_COMPLETE"], [])
    with pytest.raises(ConfigurationError, match="delete-stack --stack-name flotilla-x"):
        _stacks(client).deploy("flotilla-x", "{}", {})
    assert "create_stack" not in client.calls
    assert "update_stack" not in client.calls


def test_no_updates_to_perform_is_success_not_an_error() -> None:
    client = ScriptedCloudFormation(["UPDATE_COMPLETE"], [])
    result = _stacks(client).deploy("flotilla-x", "{}", {})
    assert result.changed is False
    assert result.status == "UPDATE_COMPLETE"
    assert client.calls.count("update_stack") == 1


def test_throttling_is_a_retryable_error() -> None:
    from flotilla.engine.errors import TransientError

    with pytest.raises(TransientError) as failure:
        _stacks(ScriptedCloudFormation(["THROTTLED"], [])).deploy("flotilla-x", "{}", {})
    assert failure.value.retryable
