"""An environment of several regions (issue 18): `flotilla init --region A --region B …`
makes a stack in each region naming them all, and users (with their SSH keys) are kept
in every region, so `flotilla keys` on a region's instances reads its own region alone.

One moto server stands in for every region (it keeps each region's resources apart);
a region is taken down by pointing its endpoint (`FLOTILLA_ENDPOINT_URLS`) at a proxy
that stops answering. Commands over several regions read every region first: an
unreachable region changes nothing anywhere, in one line naming it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from flotilla.cli.environment_regions import environment_regions
from flotilla.cli.wiring import AwsSettings, Wiring
from flotilla.engine import users
from flotilla.engine.errors import ConfigurationError
from tests.integration.test_cli_users import new_key
from tests.support.aws import REGION, moto_server
from tests.support.aws_cli import Cli as BaseCli
from tests.support.faults import EndpointProxy
from tests.support.wheels import synthetic_wheel

REGIONS = (REGION, "eu-west-1", "ap-southeast-2")
SECOND = REGIONS[1]


class Cli(BaseCli):
    def in_regions(self, *args: str, regions: tuple[str, ...] = REGIONS, **kw: Any) -> Any:
        """`flotilla ARGS --region A --region B …`."""
        repeated = [part for region in regions for part in ("--region", region)]
        return self.run(*args, *repeated, with_region=False, **kw)

    def client_in(self, service: str, region: str) -> Any:
        make_client: Any = boto3.client
        return make_client(service, region_name=region, endpoint_url=self.endpoint)

    def stack_in(self, region: str) -> dict[str, Any] | None:
        """The environment's stack in `region`; None if there is none (a preview's
        REVIEW_IN_PROGRESS stack is none)."""
        cloudformation = self.client_in("cloudformation", region)
        try:
            (stack,) = cloudformation.describe_stacks(StackName=self.environment_stack)["Stacks"]
        except ClientError as exc:
            if "does not exist" in str(exc):
                return None
            raise
        described: dict[str, Any] = stack
        return None if stack["StackStatus"] == "REVIEW_IN_PROGRESS" else described

    def outputs_in(self, region: str) -> dict[str, str]:
        stack = self.stack_in(region)
        assert stack is not None, f"no stack in {region}"
        return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    def parameters_in(self, region: str) -> dict[str, str]:
        stack = self.stack_in(region)
        assert stack is not None, f"no stack in {region}"
        return {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack["Parameters"]}

    def events_in(self, region: str) -> list[str]:
        answer = self.client_in("cloudformation", region).describe_stack_events(
            StackName=self.environment_stack
        )
        return [e["EventId"] for e in answer["StackEvents"]]

    def users_in(self, region: str) -> list[dict[str, Any]]:
        table = f"flotilla-{self.environment}-users"
        found = self.client_in("dynamodb", region).scan(TableName=table, ConsistentRead=True)
        return sorted(found["Items"], key=lambda item: item["name"]["S"])

    def all_users(self) -> dict[str, list[dict[str, Any]]]:
        return {region: self.users_in(region) for region in REGIONS}

    def keys_in(self, region: str, *args: str, **kw: Any) -> list[str]:
        """`flotilla keys ARGS` as a worker of `region` runs it: that region alone."""
        result = self.run("keys", *args, "--region", region, with_region=False, **kw)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(synthetic_wheel(tmp_path_factory.mktemp("wheel")))


# moto's Fn::GetAZs gives us-east-1's zones in every region, so a scheduler group
# elsewhere cannot launch there: the stacks of these tests run no scheduler.
NO_SCHEDULER = ("--scheduler-count", "0")


def test_init_in_three_regions_makes_a_stack_in_each_naming_them_all(
    endpoint: str, wheel: str
) -> None:
    cli = Cli(endpoint, f"reg{os.getpid()}")
    stack = cli.environment_stack

    preview = cli.in_regions("init", *NO_SCHEDULER, "--wheel", wheel, "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.count(f"would create stack {stack}") == 3
    for region in REGIONS:
        assert f"{region}: stack {stack}: previewed; nothing changed" in preview.stdout
        assert cli.stack_in(region) is None

    created = cli.in_regions("init", *NO_SCHEDULER, "--wheel", wheel)
    assert created.returncode == 0, created.stderr
    said = [line for line in created.stdout.splitlines() if line.startswith(REGIONS)]
    assert said == [f"{region}: stack {stack}: UPDATE_COMPLETE" for region in REGIONS]
    buckets = set()
    for region in REGIONS:
        outputs = cli.outputs_in(region)
        assert outputs["EnvironmentRegions"] == ",".join(REGIONS)
        assert cli.parameters_in(region)["EnvironmentRegions"] == ",".join(REGIONS)
        # Each region's wheel is in its own bucket, where that region's instances fetch it.
        bucket = outputs["ArtifactBucketName"]
        listed = cli.client_in("s3", region).list_objects_v2(Bucket=bucket)["Contents"]
        assert cli.parameters_in(region)["FlotillaWheel"] in {o["Key"] for o in listed}
        buckets.add(bucket)
    assert len(buckets) == 3

    # Again: nothing to change in any region, and CloudFormation is not even asked.
    events = {region: cli.events_in(region) for region in REGIONS}
    again = cli.in_regions("init", *NO_SCHEDULER, "--wheel", wheel)
    assert again.returncode == 0, again.stderr
    for region in REGIONS:
        assert f"{region}: stack {stack}: up to date" in again.stdout
        assert cli.events_in(region) == events[region]
    # Scripts get one JSON document, every region's report in it; progress on stderr.
    document = json.loads(
        cli.in_regions("init", *NO_SCHEDULER, "--wheel", wheel, "-o", "json").stdout
    )
    assert [(r["region"], r["changed"]) for r in document["regions"]] == [
        (region, False) for region in REGIONS
    ]

    # Run with one region, init keeps the regions the stack names.
    assert "up to date" in cli.ok("init", "--wheel", wheel)
    # --subnets are one region's: refused with several regions, before anything changes.
    refused = cli.in_regions("init", "--subnets", "subnet-1234")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr.startswith("error: --subnets names subnets of one region")
    assert cli.outputs_in(REGION)["EnvironmentRegions"] == ",".join(REGIONS)


def test_a_region_that_fails_midway_is_named_with_what_was_done(endpoint: str, wheel: str) -> None:
    """The last region's stack names an artifact bucket that is not there: the wheel
    cannot be published there, after the regions before it are done. The error says
    so, and the same command finishes the job once the region is put right."""
    cli = Cli(endpoint, f"half{os.getpid()}")
    last = REGIONS[-1]
    squatter = cli.client_in("cloudformation", last)
    squatter.create_stack(
        StackName=cli.environment_stack,
        TemplateBody=json.dumps(
            {
                "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
                "Outputs": {"ArtifactBucketName": {"Value": f"gone-{cli.environment}"}},
            }
        ),
    )
    failed = cli.in_regions("init", *NO_SCHEDULER, "--wheel", wheel)
    assert failed.returncode == 1, failed.stdout
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    assert errors[0].startswith(f"error: region {last}: "), errors
    assert errors[0].endswith(
        f"; done in {REGIONS[0]}, {REGIONS[1]}, not in {last}: run the same command again to finish"
    )
    for region in REGIONS[:-1]:
        assert cli.outputs_in(region)["EnvironmentRegions"] == ",".join(REGIONS)
    assert "EnvironmentRegions" not in cli.outputs_in(last)

    squatter.delete_stack(StackName=cli.environment_stack)
    finished = cli.in_regions("init", *NO_SCHEDULER, "--wheel", wheel)
    assert finished.returncode == 0, finished.stderr
    said = [line for line in finished.stdout.splitlines() if line.startswith(REGIONS)]
    stack = cli.environment_stack
    assert said == [
        f"{REGIONS[0]}: stack {stack}: up to date",
        f"{REGIONS[1]}: stack {stack}: up to date",
        f"{last}: stack {stack}: UPDATE_COMPLETE",
    ]
    assert cli.outputs_in(last)["EnvironmentRegions"] == ",".join(REGIONS)


def test_environment_regions_of_a_stack_that_names_none_is_its_own_region(
    endpoint: str,
) -> None:
    """A stack made before the output existed: its region alone. No stack: one line."""
    environment = f"old{os.getpid()}"
    wiring = Wiring(AwsSettings(environment, SECOND, endpoint_url=endpoint))
    with pytest.raises(ConfigurationError, match="flotilla init"):
        environment_regions(wiring)
    cloudformation = boto3.client("cloudformation", region_name=SECOND, endpoint_url=endpoint)
    cloudformation.create_stack(
        StackName=f"flotilla-{environment}",
        TemplateBody=json.dumps(
            {"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}, "Outputs": {}}
        ),
    )
    assert environment_regions(wiring) == (SECOND,)


# --- users, kept in every region --------------------------------------------------------


@pytest.fixture(scope="module")
def env(endpoint: str) -> Cli:
    """An environment in three regions (schedulers run elsewhere: no wheel), with the
    service api in its home region."""
    cli = Cli(endpoint, f"usr{os.getpid()}")
    made = cli.in_regions("init", "--scheduler-count", "0")
    assert made.returncode == 0, made.stderr
    cli.ok("service", "create", "api")
    return cli


def test_a_user_is_written_to_every_region_and_read_by_keys_in_each(
    env: Cli, tmp_path: Path
) -> None:
    line, _ = new_key("alice@laptop")
    (tmp_path / "alice.pub").write_text(line + "\n")
    added = env.run(
        "user", "add", "alice", "--key", str(tmp_path / "alice.pub"), "--service", "api",
        "-o", "json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["name"] == "alice"
    # Each region's outcome, on stderr since stdout is JSON.
    assert added.stderr.splitlines() == [f"{region}: user alice, version 1" for region in REGIONS]
    for region in REGIONS:
        assert env.keys_in(region, "--service", "api") == [line]
        assert env.keys_in(region, "--service", "api", "alice") == [line]
    # Entered through another region, a change still reaches every region.
    env.ok("user", "deactivate", "alice", "--region", SECOND, with_region=False)
    for region in REGIONS:
        assert env.keys_in(region, "--service", "api") == []
    env.ok("user", "activate", "alice")
    second, _ = new_key("alice@desktop")
    env.ok("user", "add", "alice", "--key", "-", stdin=second + "\n")
    for region in REGIONS:
        assert env.keys_in(region, "--service", "api", "alice") == [line, second]
    env.ok("user", "remove", "alice", "--key", users.fingerprint(line))
    for region in REGIONS:
        assert env.keys_in(region, "--service", "api", "alice") == [second]
    # Reading commands read the region they are given.
    listed = json.loads(env.ok("user", "list", "-o", "json", "--region", SECOND, with_region=False))
    assert [u["name"] for u in listed] == ["alice"]
    removed = env.ok("user", "remove", "alice")
    assert removed.splitlines() == [
        *(f"{region}: removed" for region in REGIONS),
        "removed user alice",
    ]
    assert all(items == [] for items in env.all_users().values())


def take_down(proxy: EndpointProxy) -> None:
    """`proxy.down()`, then connect until refused: its accepting thread may still be
    waiting in accept() on the closed socket, and passes one last connection through."""
    proxy.down()
    for _ in range(5):
        try:
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10).close()
        except OSError:
            return
    raise AssertionError(f"the proxy on port {proxy.port} still accepts connections")


def test_an_unreachable_region_changes_users_nowhere(env: Cli, tmp_path: Path) -> None:
    line, _ = new_key("bob@laptop")
    (tmp_path / "bob.pub").write_text(line + "\n")
    env.ok("user", "add", "bob", "--key", str(tmp_path / "bob.pub"), "--service", "api")
    other, _ = new_key("carl@laptop")
    (tmp_path / "carl.pub").write_text(other + "\n")
    port = int(env.endpoint.rsplit(":", 1)[1])
    proxy = EndpointProxy(port)
    through_proxy = {"FLOTILLA_ENDPOINT_URLS": f"{SECOND}={proxy.endpoint}"}
    try:
        take_down(proxy)
        before = env.all_users()
        for args in (
            ["user", "add", "carl", "--key", str(tmp_path / "carl.pub"), "--service", "api"],
            ["user", "add", "bob", "--key", str(tmp_path / "carl.pub")],
            ["user", "deactivate", "bob"],
            ["user", "remove", "bob"],
        ):
            result = env.run(*args, env=through_proxy)
            assert result.returncode == 1, (args, result.stdout)
            assert result.stdout == "", result.stderr
            errors = [e for e in result.stderr.splitlines() if not e.startswith("note:")]
            assert len(errors) == 1, (args, result.stderr)
            assert errors[0].startswith(f"error: region {SECOND} is unreachable: "), errors
            assert env.all_users() == before, args
        # The other regions' instances still let bob in: each reads its own region.
        assert env.keys_in(REGION, "--service", "api", "bob", env=through_proxy) == [line]
        # Back up, the same command goes through, to every region (through the proxy).
        proxy.up()
        env.ok(
            "user", "add", "carl", "--key", str(tmp_path / "carl.pub"), "--service", "api",
            env=through_proxy,
        )  # fmt: skip
        for region in REGIONS:
            assert env.keys_in(region, "--service", "api", "carl") == [other]
    finally:
        proxy.down()


def test_a_region_without_its_tables_is_named_and_nothing_is_written(
    endpoint: str, tmp_path: Path
) -> None:
    cli = Cli(endpoint, f"gap{os.getpid()}")
    made = cli.in_regions("init", *NO_SCHEDULER, regions=REGIONS[:2])
    assert made.returncode == 0, made.stderr
    cli.client_in("dynamodb", SECOND).delete_table(TableName=f"flotilla-{cli.environment}-users")
    line, _ = new_key("dora@laptop")
    (tmp_path / "dora.pub").write_text(line + "\n")
    result = cli.run("user", "add", "dora", "--key", str(tmp_path / "dora.pub"))
    assert result.returncode == 1
    assert result.stdout == ""
    (error,) = result.stderr.splitlines()
    assert error.startswith(f"error: region {SECOND}: reading user 'dora': a Flotilla table "), (
        error
    )
    assert cli.users_in(REGION) == []


def test_user_commands_before_init_say_to_run_it(endpoint: str) -> None:
    cli = Cli(endpoint, f"none{os.getpid()}")
    result = cli.run("user", "remove", "nobody")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: environment {cli.environment!r} has no stack flotilla-{cli.environment} in "
        f"{REGION}: create it with `flotilla init` first"
    ]
