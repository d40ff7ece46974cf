"""The load balancer contract, run against every implementation of the `LoadBalancer` port.

Kinds: a classic ELB and an ELBv2 target group behind an ALB, both on moto in-process
(with real EC2 instances, which moto wants for health), and the in-memory twin that takes
time on a fake clock. Written once: what the deploy machine relies on holds for all three.

moto answers at once (healthy as soon as registered, unused as soon as deregistered,
whatever the connection draining or deregistration delay), so on moto the polls below
end at the first call; the in-memory twin shows the waits, and its timing has its own
tests (tests/unit/test_memory_load_balancer.py), as do AWS's answers that moto never
gives (tests/unit/test_elb_states.py).

Below the contract: how botocore failures reach the engine, and how many requests each
operation costs, counted per attempt with botocore's `before-send` event so that hidden
retries would show.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from moto.ec2.models.amis import AMIS

from flotilla.adapters.dynamodb_codec import CLIENT_CONFIG
from flotilla.adapters.elb_classic import ClassicLoadBalancer
from flotilla.adapters.elbv2 import TargetGroupLoadBalancer
from flotilla.adapters.memory_load_balancer import MemoryLoadBalancer
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import ConfigurationError, TransientError
from flotilla.engine.ports import LoadBalancer, TargetState
from tests.support.aws import REGION, free_port

DRAIN_SECONDS = 30
HEALTH_SECONDS = 20
POLL_LIMIT_SECONDS = 120


def _attempts_allowed() -> int:
    """Requests botocore makes for one call under CLIENT_CONFIG, the first one included.

    botocore's `max_attempts` counts retries after the first request (its docs: "setting
    this value to 2 will result in the request being retried at most two times after the
    initial request"); `total_max_attempts` counts them all and wins when both are set.
    """
    retries: dict[str, Any] = CLIENT_CONFIG.retries or {}
    if "total_max_attempts" in retries:
        return int(retries["total_max_attempts"])
    return 1 + int(retries.get("max_attempts", 2))


MAX_ATTEMPTS = _attempts_allowed()  # 4 with CLIENT_CONFIG's max_attempts=3


class Attempts:
    """HTTP requests per operation; botocore emits `before-send` once per attempt."""

    def __init__(self, client: Any) -> None:
        self.sent: Counter[str] = Counter()
        client.meta.events.register("before-send", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.sent[event_name.rsplit(".", 1)[-1]] += 1

    def reset(self) -> None:
        self.sent.clear()


@dataclass
class Balancer:
    kind: str
    balancer: LoadBalancer
    instances: list[str]  # instances that exist and may be registered
    clock: FakeClock
    missing: LoadBalancer  # the same kind, naming a load balancer that does not exist
    missing_name: str
    # Operations on `missing` that the stand-in answers as AWS does: moto's classic ELB
    # fails inside itself (AttributeError) on register/deregister for an unknown name,
    # where AWS answers LoadBalancerNotFound; that answer is tested with a Stubber in
    # tests/unit/test_elb_states.py.
    missing_operations: tuple[str, ...] = ("state", "register", "deregister")
    client: Any = None
    attempts: Attempts | None = None


def _ec2_instances(ec2: Any, count: int, subnet_id: str | None = None) -> list[str]:
    image = AMIS[0]["ami_id"]  # one of the AMIs moto bundles (DescribeImages takes seconds)
    placement = {"SubnetId": subnet_id} if subnet_id else {}
    reservation = ec2.run_instances(
        ImageId=image, MinCount=count, MaxCount=count, InstanceType="t3.micro", **placement
    )
    return [instance["InstanceId"] for instance in reservation["Instances"]]


def _classic(clock: FakeClock) -> Balancer:
    client = boto3.client("elb", region_name=REGION, config=CLIENT_CONFIG)
    ec2 = boto3.client("ec2", region_name=REGION)
    client.create_load_balancer(
        LoadBalancerName="web",
        Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 8080}],
        AvailabilityZones=[f"{REGION}a"],
    )
    # As production would set it; moto keeps it and never drains all the same.
    client.modify_load_balancer_attributes(
        LoadBalancerName="web",
        LoadBalancerAttributes={"ConnectionDraining": {"Enabled": True, "Timeout": DRAIN_SECONDS}},
    )
    return Balancer(
        kind="classic",
        balancer=ClassicLoadBalancer(client, "web"),
        instances=_ec2_instances(ec2, 2),
        clock=clock,
        missing=ClassicLoadBalancer(client, "no-such-elb"),
        missing_name="no-such-elb",
        missing_operations=("state",),
        client=client,
        attempts=Attempts(client),
    )


def _target_group(clock: FakeClock) -> Balancer:
    client = boto3.client("elbv2", region_name=REGION, config=CLIENT_CONFIG)
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24", AvailabilityZone=REGION + zone)[
            "Subnet"
        ]["SubnetId"]
        for n, zone in enumerate("ab")
    ]
    alb = client.create_load_balancer(Name="web", Subnets=subnets)["LoadBalancers"][0]
    group = client.create_target_group(
        Name="web", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="instance"
    )["TargetGroups"][0]
    arn = group["TargetGroupArn"]
    client.modify_target_group_attributes(
        TargetGroupArn=arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(DRAIN_SECONDS)}],
    )
    client.create_listener(
        LoadBalancerArn=alb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": arn}],
    )
    missing_arn = arn.replace("/web/", "/no-such-group/")
    return Balancer(
        kind="target_group",
        balancer=TargetGroupLoadBalancer(client, arn),
        instances=_ec2_instances(ec2, 2, subnets[0]),
        clock=clock,
        missing=TargetGroupLoadBalancer(client, missing_arn),
        missing_name=missing_arn,
        client=client,
        attempts=Attempts(client),
    )


def _memory(clock: FakeClock) -> Balancer:
    missing = MemoryLoadBalancer(clock, name="no-such-lb")
    missing.delete()
    return Balancer(
        kind="memory",
        balancer=MemoryLoadBalancer(
            clock, drain_seconds=DRAIN_SECONDS, health_seconds=HEALTH_SECONDS, name="web"
        ),
        instances=["i-0000000000000000a", "i-0000000000000000b"],
        clock=clock,
        missing=missing,
        missing_name="no-such-lb",
    )


@pytest.fixture(params=["classic", "target_group", "memory"])
def lb(request: pytest.FixtureRequest) -> Iterator[Balancer]:
    clock = FakeClock()
    if request.param == "memory":
        yield _memory(clock)
        return
    with mock_aws():
        yield _classic(clock) if request.param == "classic" else _target_group(clock)


@pytest.fixture(params=["classic", "target_group"])
def aws_lb(request: pytest.FixtureRequest) -> Iterator[Balancer]:
    with mock_aws():
        yield _classic(FakeClock()) if request.param == "classic" else _target_group(FakeClock())


def settle(lb: Balancer, instance_id: str, wanted: TargetState) -> list[TargetState]:
    """Poll once a second of the fake clock until `wanted`; the distinct states seen."""
    seen: list[TargetState] = []
    for _ in range(POLL_LIMIT_SECONDS + 1):
        state = lb.balancer.state(instance_id)
        if not seen or seen[-1] is not state:
            seen.append(state)
        if state is wanted:
            return seen
        lb.clock.advance(1)
    pytest.fail(f"{instance_id} did not become {wanted} in {POLL_LIMIT_SECONDS} s: {seen}")


# The contract.


def test_an_instance_never_registered_is_unused(lb: Balancer) -> None:
    assert [lb.balancer.state(i) for i in lb.instances] == [TargetState.UNUSED] * 2


def test_a_registered_instance_becomes_healthy(lb: Balancer) -> None:
    first = lb.instances[0]
    lb.balancer.register(first)
    seen = settle(lb, first, TargetState.HEALTHY)
    assert set(seen) <= {TargetState.INITIAL, TargetState.HEALTHY}


def test_a_deregistered_instance_drains_then_is_unused(lb: Balancer) -> None:
    first = lb.instances[0]
    lb.balancer.register(first)
    settle(lb, first, TargetState.HEALTHY)
    lb.balancer.deregister(first)
    seen = settle(lb, first, TargetState.UNUSED)
    assert set(seen) <= {TargetState.DRAINING, TargetState.UNUSED}


def test_an_instance_comes_back_after_a_drain(lb: Balancer) -> None:
    first = lb.instances[0]
    lb.balancer.register(first)
    settle(lb, first, TargetState.HEALTHY)
    lb.balancer.deregister(first)
    settle(lb, first, TargetState.UNUSED)
    lb.balancer.register(first)
    assert set(settle(lb, first, TargetState.HEALTHY)) <= {
        TargetState.INITIAL,
        TargetState.HEALTHY,
    }


def test_deregistering_an_instance_that_is_not_registered_is_harmless(lb: Balancer) -> None:
    first = lb.instances[0]
    lb.balancer.deregister(first)
    lb.balancer.deregister(first)
    assert lb.balancer.state(first) is TargetState.UNUSED


def test_deregistering_twice_is_harmless(lb: Balancer) -> None:
    first = lb.instances[0]
    lb.balancer.register(first)
    settle(lb, first, TargetState.HEALTHY)
    lb.balancer.deregister(first)
    lb.balancer.deregister(first)  # an agent that crashed before its checkpoint does this
    settle(lb, first, TargetState.UNUSED)
    lb.balancer.deregister(first)
    assert lb.balancer.state(first) is TargetState.UNUSED


def test_registering_twice_is_harmless_and_not_counted(lb: Balancer) -> None:
    first = lb.instances[0]
    lb.balancer.register(first)
    lb.balancer.register(first)
    settle(lb, first, TargetState.HEALTHY)
    lb.balancer.register(first)
    assert lb.balancer.state(first) is TargetState.HEALTHY
    lb.balancer.deregister(first)  # one deregistration undoes any number of registrations
    settle(lb, first, TargetState.UNUSED)


def test_instances_are_independent(lb: Balancer) -> None:
    first, second = lb.instances
    lb.balancer.register(first)
    settle(lb, first, TargetState.HEALTHY)
    assert lb.balancer.state(second) is TargetState.UNUSED
    lb.balancer.register(second)
    lb.balancer.deregister(first)
    settle(lb, second, TargetState.HEALTHY)
    settle(lb, first, TargetState.UNUSED)
    assert lb.balancer.state(second) is TargetState.HEALTHY


def test_an_unknown_load_balancer_is_a_configuration_error_naming_it(lb: Balancer) -> None:
    first = lb.instances[0]
    calls: dict[str, Callable[[], object]] = {
        "state": lambda: lb.missing.state(first),
        "register": lambda: lb.missing.register(first),
        "deregister": lambda: lb.missing.deregister(first),
    }
    for operation in lb.missing_operations:
        with pytest.raises(ConfigurationError) as refused:
            calls[operation]()
        assert lb.missing_name in refused.value.message, operation
        assert not refused.value.retryable


# Failures on the wire, and what each operation costs (moto kinds).


class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


class Answer:
    """Answers the next `times` requests with an AWS error, before moto can answer."""

    def __init__(self, client: Any, code: str, status: int, times: int = 1_000) -> None:
        self.code = code
        self.status = status
        self.left = times
        client.meta.events.register_first("before-send", self._answer)

    def _answer(self, request: Any, **_: Any) -> AWSResponse | None:
        if self.left <= 0:
            return None
        self.left -= 1
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{self.code}</Code><Message>injected by the test</Message>"
            "</Error><RequestId>test</RequestId></ErrorResponse>"
        ).encode()
        return AWSResponse(request.url, self.status, {}, _Body(body))


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """botocore's back-off sleeps between attempts, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr("botocore.endpoint.time", SimpleNamespace(sleep=slept.append))
    return slept


DESCRIBE = {"classic": "DescribeInstanceHealth", "target_group": "DescribeTargetHealth"}


@pytest.mark.parametrize(
    ("code", "status"),
    [("Throttling", 400), ("ServiceUnavailable", 503), ("InternalFailure", 500)],
)
def test_throttling_and_5xx_are_transient_after_botocores_own_attempts(
    aws_lb: Balancer, backoffs: list[float], code: str, status: int
) -> None:
    assert aws_lb.attempts is not None
    Answer(aws_lb.client, code, status)
    with pytest.raises(TransientError) as failed:
        aws_lb.balancer.state(aws_lb.instances[0])
    assert failed.value.retryable
    assert code in failed.value.message
    assert aws_lb.attempts.sent == {DESCRIBE[aws_lb.kind]: MAX_ATTEMPTS}
    assert len(backoffs) == MAX_ATTEMPTS - 1


def test_one_throttled_answer_is_absorbed_by_botocore(
    aws_lb: Balancer, backoffs: list[float]
) -> None:
    assert aws_lb.attempts is not None
    first = aws_lb.instances[0]
    aws_lb.balancer.register(first)
    aws_lb.attempts.reset()
    Answer(aws_lb.client, "Throttling", 400, times=1)
    assert aws_lb.balancer.state(first) is TargetState.HEALTHY
    assert aws_lb.attempts.sent == {DESCRIBE[aws_lb.kind]: 2}
    assert len(backoffs) == 1


@pytest.mark.parametrize("code", ["AccessDenied", "AccessDeniedException"])
def test_access_denied_is_a_configuration_error_tried_once(
    aws_lb: Balancer, backoffs: list[float], code: str
) -> None:
    assert aws_lb.attempts is not None
    Answer(aws_lb.client, code, 403)
    for operation in (aws_lb.balancer.register, aws_lb.balancer.deregister):
        with pytest.raises(ConfigurationError) as refused:
            operation(aws_lb.instances[0])
        assert "permission" in refused.value.message
        assert not refused.value.retryable
    assert sum(aws_lb.attempts.sent.values()) == 2
    assert backoffs == []


def test_an_unreachable_endpoint_is_transient_after_botocores_own_attempts(
    backoffs: list[float],
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    elb = boto3.client("elb", region_name=REGION, endpoint_url=endpoint, config=CLIENT_CONFIG)
    elbv2 = boto3.client("elbv2", region_name=REGION, endpoint_url=endpoint, config=CLIENT_CONFIG)
    balancers: list[tuple[Any, LoadBalancer]] = [
        (elb, ClassicLoadBalancer(elb, "web")),
        (elbv2, TargetGroupLoadBalancer(elbv2, "arn:aws:elasticloadbalancing:x")),
    ]
    for client, balancer in balancers:
        attempts = Attempts(client)
        with pytest.raises(TransientError) as failed:
            balancer.state("i-0000000000000000a")
        assert failed.value.retryable
        assert "cannot reach" in failed.value.message
        assert sum(attempts.sent.values()) == MAX_ATTEMPTS


def test_each_operation_is_one_request(aws_lb: Balancer) -> None:
    """No hidden retries or look-ups: one request per call on the way a deploy goes."""
    assert aws_lb.attempts is not None
    first = aws_lb.instances[0]
    describe = DESCRIBE[aws_lb.kind]
    register, deregister = {
        "classic": ("RegisterInstancesWithLoadBalancer", "DeregisterInstancesFromLoadBalancer"),
        "target_group": ("RegisterTargets", "DeregisterTargets"),
    }[aws_lb.kind]
    steps: list[tuple[Callable[[], object], dict[str, int]]] = [
        (lambda: aws_lb.balancer.deregister(first), {deregister: 1}),
        (lambda: aws_lb.balancer.register(first), {register: 1}),
        (lambda: aws_lb.balancer.register(first), {register: 1}),
        (lambda: aws_lb.balancer.state(first), {describe: 1}),
        (lambda: aws_lb.balancer.deregister(first), {deregister: 1}),
    ]
    for step, cost in steps:
        aws_lb.attempts.reset()
        step()
        assert aws_lb.attempts.sent == cost


def test_state_of_an_unregistered_instance_costs(aws_lb: Balancer) -> None:
    """moto's classic ELB says Unknown for it (AWS says OutOfService, not registered):
    the adapter then asks DescribeLoadBalancers whether it is registered at all."""
    assert aws_lb.attempts is not None
    aws_lb.balancer.state(aws_lb.instances[0])
    expected = {
        "classic": {"DescribeInstanceHealth": 1, "DescribeLoadBalancers": 1},
        "target_group": {"DescribeTargetHealth": 1},
    }[aws_lb.kind]
    assert aws_lb.attempts.sent == expected
