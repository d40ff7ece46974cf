"""The workers' (and the scheduler's) IAM policies grant exactly what the agent needs.

The templates are resolved here the way CloudFormation would for each load balancer kind
(a small resolver for the intrinsics they use), and the resulting statements are compared
with the complete list of allowed (action, resource, condition) grants: anything more,
anything less, fails.

Resource "*" appears only where AWS offers nothing narrower: Elastic Load Balancing's
Describe* actions support no resource-level permissions (DescribeInstanceHealth and
DescribeLoadBalancers for a classic ELB, DescribeTargetHealth for a target group). They
only read. The only other wildcard is the artifact bucket's `wheels/*` prefix, read only.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from flotilla.adapters.secrets import CONTEXT_KEY
from flotilla.adapters.templates import load_template
from flotilla.scheduler.leader import lock_name

ACCOUNT = "123456789012"
REGION = "eu-west-1"
ENV = "prod"
SERVICE = "api"
TARGET_GROUP_ARN = (
    f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/api-tg/0123456789abcdef"
)
ELB_NAME = "api-elb"

# Resource "*" is allowed for these actions only (see the module docstring).
NO_RESOURCE_LEVEL_PERMISSIONS = {
    "elasticloadbalancing:DescribeInstanceHealth",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeTargetHealth",
}


def imported(export: str) -> str:
    """What the environment stack exports, for ENV in REGION/ACCOUNT."""
    prefix = f"flotilla-{ENV}-"
    assert export.startswith(prefix), export
    name = export[len(prefix) :]
    tables = {
        "ServicesTableArn": "services",
        "RevisionsTableArn": "revisions",
        "InstancesTableArn": "instances",
        "DeploysTableArn": "deploys",
        "LocksTableArn": "locks",
    }
    if name in tables:
        return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/flotilla-{ENV}-{tables[name]}"
    if name == "EnvironmentKeyArn":
        return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1111-key"
    if name == "EventsQueueArn":
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:flotilla-{ENV}-events"
    if name == "UsersTableArn":
        return table("users")
    if name == "ArtifactBucket":
        return BUCKET
    raise AssertionError(f"the service stack imports an unknown export {export!r}")


BUCKET = "prod-artifactbucket-1a2b3c"
STACK_ID = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/stack/0000-1111"


def table(name: str) -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/flotilla-{ENV}-{name}"


NO_VALUE = object()


class Resolver:
    """Resolves the intrinsic functions our templates use, as CloudFormation would."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, str]) -> None:
        self.template = template
        self.values: dict[str, Any] = {
            name: spec.get("Default") for name, spec in template["Parameters"].items()
        }
        self.values.update(parameters)
        self.values.update(
            {
                "AWS::Partition": "aws",
                "AWS::Region": REGION,
                "AWS::AccountId": ACCOUNT,
                "AWS::StackName": "stack",
                "AWS::StackId": STACK_ID,
            }
        )
        self.conditions = {
            name: self.condition(body) for name, body in template.get("Conditions", {}).items()
        }

    def condition(self, body: Any) -> bool:
        if isinstance(body, dict) and "Condition" in body:
            return self.conditions[body["Condition"]]
        (function, arguments), *_ = body.items()
        if function == "Fn::Equals":
            left, right = (self.resolve(a) for a in arguments)
            return bool(left == right)
        if function == "Fn::Not":
            return not self.condition(arguments[0])
        if function == "Fn::And":
            return all(self.condition(a) for a in arguments)
        if function == "Fn::Or":
            return any(self.condition(a) for a in arguments)
        raise AssertionError(f"unsupported condition {function}")

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.values:
            return self.values[name]
        resource = self.template["Resources"][name]
        assert self.conditions.get(resource.get("Condition", ""), True), (
            f"{name} is referenced but not created"
        )
        physical = {"TargetGroup": TARGET_GROUP_ARN, "ClassicLoadBalancer": ELB_NAME}
        return physical.get(name, f"physical-{name}")

    def sub(self, text: str, extra: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in extra:
                return str(extra[name])
            if "." in name:
                return f"physical-{name}"
            return str(self.ref(name))

        return re.sub(r"\$\{([A-Za-z0-9:.]+)\}", one, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, argument), *_ = value.items()
            if key == "Ref":
                return self.ref(argument)
            if key == "Fn::Sub":
                if isinstance(argument, str):
                    return self.sub(argument, {})
                text, variables = argument
                return self.sub(text, {k: self.resolve(v) for k, v in variables.items()})
            if key == "Fn::ImportValue":
                return imported(self.resolve(argument))
            if key == "Fn::If":
                name, then, otherwise = argument
                return self.resolve(then if self.conditions[name] else otherwise)
            if key == "Fn::Join":
                separator, parts = argument
                return separator.join(self.resolve(parts))
            if key == "Fn::GetAtt":
                return f"physical-{'.'.join(argument)}"
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}


def role_policy(template_name: str, role: str, parameters: dict[str, str]) -> dict[str, Any]:
    template = load_template(template_name)
    resolver = Resolver(template, parameters)
    properties = resolver.resolve(template["Resources"][role]["Properties"])
    trust = properties["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    assert "ManagedPolicyArns" not in properties
    (policy,) = properties["Policies"]
    document: dict[str, Any] = policy["PolicyDocument"]
    return document


def worker_policy(kind: str) -> dict[str, Any]:
    parameters = {
        "EnvironmentName": ENV,
        "ServiceName": SERVICE,
        "LoadBalancerKind": kind,
        "LoadBalancerName": {"none": "", "classic": ELB_NAME, "target_group": "api-tg"}[kind],
        "VpcId": "vpc-0123abcd" if kind == "target_group" else "",
    }
    return role_policy("service.yaml", "WorkerRole", parameters)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grants(document: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Every (action, resource, condition as JSON) the document allows."""
    found = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}, statement
        condition = json.dumps(statement.get("Condition"), sort_keys=True)
        for action in _listed(statement["Action"]):
            for resource in _listed(statement["Resource"]):
                found.add((action, resource, condition))
    return found


def leading_keys(operator: str, *keys: str) -> str:
    return json.dumps({operator: {"dynamodb:LeadingKeys": list(keys)}}, sort_keys=True)


NONE = json.dumps(None)
OWN_SERVICE = leading_keys("ForAllValues:StringEquals", SERVICE)
OWN_INSTANCES = leading_keys("ForAllValues:StringLike", f"{SERVICE}/i-*")
OWN_DEPLOYS = leading_keys("ForAllValues:StringLike", f"{SERVICE}/i-*.*")
LOCKS = leading_keys("ForAllValues:StringLike", f"deploy/{SERVICE}")
WAKE_QUEUES = f"arn:aws:sqs:{REGION}:{ACCOUNT}:flotilla-{ENV}-wake-*"
OWN_CONTEXT = json.dumps({"StringEquals": {f"kms:EncryptionContext:{CONTEXT_KEY}": SERVICE}})
KEY = imported(f"flotilla-{ENV}-EnvironmentKeyArn")
QUEUE = imported(f"flotilla-{ENV}-EventsQueueArn")

COMMON = {
    ("dynamodb:GetItem", table("services"), OWN_SERVICE),
    ("dynamodb:GetItem", table("revisions"), OWN_SERVICE),
    ("dynamodb:Query", table("revisions"), OWN_SERVICE),
    ("dynamodb:GetItem", table("instances"), OWN_INSTANCES),
    ("dynamodb:UpdateItem", table("instances"), OWN_INSTANCES),
    ("dynamodb:GetItem", table("deploys"), OWN_DEPLOYS),
    ("dynamodb:PutItem", table("deploys"), OWN_DEPLOYS),
    ("dynamodb:Query", table("deploys") + "/index/by-instance", OWN_INSTANCES),
    ("dynamodb:Query", table("locks"), LOCKS),
    ("dynamodb:UpdateItem", table("locks"), LOCKS),
    ("sqs:GetQueueUrl", QUEUE, NONE),
    ("sqs:SendMessage", QUEUE, NONE),
    # The agent's own wake-up queue: opened and long-polled by it, rung by the scheduler.
    ("sqs:CreateQueue", WAKE_QUEUES, NONE),
    ("sqs:TagQueue", WAKE_QUEUES, NONE),
    ("sqs:ReceiveMessage", WAKE_QUEUES, NONE),
    ("sqs:DeleteMessage", WAKE_QUEUES, NONE),
    ("kms:Decrypt", KEY, OWN_CONTEXT),
    # The user data: Flotilla's wheel, and the CreationPolicy's signal.
    ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/wheels/*", NONE),
    ("cloudformation:SignalResource", STACK_ID, NONE),
    # sshd's `flotilla keys`: the users table, read only (it holds public keys only).
    ("dynamodb:GetItem", table("users"), NONE),
    ("dynamodb:Scan", table("users"), NONE),
}
# Read-only grants with a wildcard resource narrower than "*".
WILDCARD_PREFIXES = {("s3:GetObject", f"arn:aws:s3:::{BUCKET}/wheels/*")} | {
    (action, WAKE_QUEUES)
    for action in ("sqs:CreateQueue", "sqs:TagQueue", "sqs:ReceiveMessage", "sqs:DeleteMessage")
}
ELB_ARN = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:loadbalancer/{ELB_NAME}"
BY_KIND = {
    "none": set(),
    "classic": {
        ("elasticloadbalancing:RegisterInstancesWithLoadBalancer", ELB_ARN, NONE),
        ("elasticloadbalancing:DeregisterInstancesFromLoadBalancer", ELB_ARN, NONE),
        ("elasticloadbalancing:DescribeInstanceHealth", "*", NONE),
        ("elasticloadbalancing:DescribeLoadBalancers", "*", NONE),
    },
    "target_group": {
        ("elasticloadbalancing:RegisterTargets", TARGET_GROUP_ARN, NONE),
        ("elasticloadbalancing:DeregisterTargets", TARGET_GROUP_ARN, NONE),
        ("elasticloadbalancing:DescribeTargetHealth", "*", NONE),
    },
}


@pytest.mark.parametrize("kind", ["none", "classic", "target_group"])
def test_the_worker_gets_exactly_the_allowed_grants(kind: str) -> None:
    assert grants(worker_policy(kind)) == COMMON | BY_KIND[kind]


@pytest.mark.parametrize("kind", ["none", "classic", "target_group"])
def test_no_wildcard_action_and_resource_star_only_where_aws_requires_it(kind: str) -> None:
    for action, resource, _ in grants(worker_policy(kind)):
        assert "*" not in action
        assert "?" not in action
        if resource == "*":
            assert action in NO_RESOURCE_LEVEL_PERMISSIONS
        elif (action, resource) not in WILDCARD_PREFIXES:
            assert "*" not in resource, (action, resource)


@pytest.mark.parametrize("kind", ["none", "classic", "target_group"])
def test_decrypt_is_always_bound_to_the_services_encryption_context(kind: str) -> None:
    decrypting = [
        s for s in worker_policy(kind)["Statement"] if "kms:Decrypt" in _listed(s["Action"])
    ]
    assert decrypting
    for statement in decrypting:
        assert statement["Condition"] == {
            "StringEquals": {f"kms:EncryptionContext:{CONTEXT_KEY}": SERVICE}
        }
    assert {a for a, _, _ in grants(worker_policy(kind)) if a.startswith("kms:")} == {"kms:Decrypt"}


def test_every_dynamodb_grant_names_its_keys_and_none_can_go_without_one() -> None:
    """Except the users table, which sshd's `flotilla keys` reads whole, read only."""
    for action, resource, condition in grants(worker_policy("classic")):
        if resource == table("users"):
            assert action in {"dynamodb:GetItem", "dynamodb:Scan"}
            continue
        if action.startswith("dynamodb:"):
            assert "dynamodb:LeadingKeys" in condition
            # ForAllValues passes when a request names no key at all (a Scan, a batch):
            # so none of those may be granted.
            assert action in {
                "dynamodb:GetItem",
                "dynamodb:Query",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
            }


def test_another_services_worker_gets_its_own_service_only() -> None:
    document = role_policy(
        "service.yaml",
        "WorkerRole",
        {"EnvironmentName": ENV, "ServiceName": "billing", "LoadBalancerKind": "none"},
    )
    text = json.dumps(document)
    assert '"api"' not in text
    assert "deploy/api" not in text
    assert "deploy/billing" in text


def test_the_scheduler_gets_exactly_its_grants_on_its_environments_resources() -> None:
    template = load_template("environment.yaml")
    resolver = Resolver(template, {"EnvironmentName": ENV})
    properties = resolver.resolve(template["Resources"]["SchedulerRole"]["Properties"])
    (policy,) = properties["Policies"]

    def arn(resource: str) -> str:
        return f"physical-{resource}.Arn"  # GetAtt of this stack's own resource

    expected = (
        {
            (action, resource)
            for actions, resources in (
                (("GetItem", "Scan", "PutItem"), [arn("ServicesTable")]),
                (
                    ("GetItem", "Query", "UpdateItem"),
                    [
                        arn("InstancesTable"),
                        arn("InstancesTable") + "/index/by-service",
                        arn("InstancesTable") + "/index/by-instance",
                    ],
                ),
                (("GetItem", "Query"), [arn("RevisionsTable")]),
                (
                    ("GetItem", "Query"),
                    [arn("DeploysTable"), arn("DeploysTable") + "/index/by-service"],
                ),
                (("Query", "UpdateItem"), [arn("LocksTable")]),
            )
            for action in (f"dynamodb:{a}" for a in actions)
            for resource in resources
        }
        | {
            (f"sqs:{action}", arn("EventsQueue"))
            for action in ("GetQueueUrl", "ReceiveMessage", "DeleteMessage")
        }
        | {
            (f"sqs:{action}", f"arn:aws:sqs:{REGION}:{ACCOUNT}:flotilla-{ENV}-wake-*")
            for action in ("SendMessage", "DeleteQueue")
        }
        | {
            ("s3:GetObject", "physical-ArtifactBucket.Arn/wheels/*"),
            ("cloudformation:SignalResource", STACK_ID),
            # Gates and events out (issue 16): alarms are read on "*" (composite alarms are
            # shown only to a grant on "*"); events go to this environment's topic only.
            ("cloudwatch:DescribeAlarms", "*"),
            ("sns:Publish", "physical-EventsTopic"),  # Ref of a topic is its ARN
        }
    )
    found = grants(policy["PolicyDocument"])
    assert {(action, resource) for action, resource, _ in found} == expected
    locks = {(a, r) for a, r in expected if r == arn("LocksTable")}
    assert {(a, r, c) for a, r, c in found if (a, r) in locks} == {
        (a, r, SCHEDULER_LOCKS) for a, r in locks
    }
    assert {c for a, r, c in found if (a, r) not in locks} == {NONE}


SCHEDULER_LOCKS = leading_keys("ForAllValues:StringLike", "scheduler", "scheduler/*")


def _iam_like(value: str, pattern: str) -> bool:
    """IAM's StringLike: `*` any run of characters (slashes too), `?` any one."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def test_the_schedulers_lock_grant_admits_every_leader_lease_and_no_other_lock() -> None:
    """moto does not evaluate IAM conditions: the key shapes are checked against the
    statement's patterns instead, every shard layout up to 64 segments."""
    patterns = json.loads(SCHEDULER_LOCKS)["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
    names = {lock_name(s, n) for n in range(1, 65) for s in range(n)}
    assert all(any(_iam_like(name, p) for p in patterns) for name in names)
    others = ["deploy/api", "deploy/scheduler", "agent/i-0123", "schedulers", "x-scheduler"]
    assert not any(_iam_like(name, p) for name in others for p in patterns)


def test_the_scheduler_publishes_to_its_own_environments_topic_only() -> None:
    template = load_template("environment.yaml")
    resolver = Resolver(template, {"EnvironmentName": ENV})
    topic = resolver.resolve(template["Resources"]["EventsTopic"])
    assert topic["Type"] == "AWS::SNS::Topic"
    assert topic["Properties"]["TopicName"] == f"flotilla-{ENV}-events"
    (policy,) = resolver.resolve(template["Resources"]["SchedulerRole"]["Properties"])["Policies"]
    found = grants(policy["PolicyDocument"])
    assert {(a, r) for a, r, _ in found if a.startswith("sns:")} == {
        ("sns:Publish", "physical-EventsTopic")
    }
    # Resource "*" only for reading alarms, and only the one read action.
    assert {(a, r) for a, r, _ in found if r == "*"} == {("cloudwatch:DescribeAlarms", "*")}
    # The scheduler learns the topic from its user data; the stack gives it out to operators.
    user_data = json.dumps(template["Resources"]["SchedulerLaunchTemplate"])
    assert "FLOTILLA_EVENTS_TOPIC=${EventsTopic}" in user_data
    assert template["Outputs"]["EventsTopicArn"]["Value"] == {"Ref": "EventsTopic"}
