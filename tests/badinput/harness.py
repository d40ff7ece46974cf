"""The `flotilla` CLI run in-process, through `flotilla.cli.main.main`, against moto.

A subprocess per hypothesis example would take seconds; calling `main()` with `sys.argv`
patched inside click's `CliRunner.isolation` (stdin, stdout and stderr swapped for
buffers) goes through exactly the error handling the console script has: `main()` maps
errors to a line and an exit code and ends with `sys.exit`, which is caught here. Any
other exception escaping `main()` is what an operator would see as a traceback.

AWS is moto in-process (`mock_aws`), its tables created through CloudFormation as in
production (tests.support.aws.create_environment_stack).
"""

from __future__ import annotations

import functools
import json
import sys
import types
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from click.testing import CliRunner

from flotilla.adapters.dynamodb_codec import CLIENT_CONFIG
from flotilla.cli import wiring as wiring_module
from flotilla.cli.main import main
from flotilla.cli.wiring import AwsSettings, Wiring
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome, Transition
from flotilla.engine.config import TableNames
from flotilla.engine.records import Instance
from tests.support.aws import REGION, create_environment_stack

SECRET = "s3cr3t-badinput-value"
UNIT = "[Unit]\nDescription=web\n[Service]\nExecStart=/usr/bin/web\n"


@functools.cache
def _session(profile_name: str | None = None, region_name: str | None = None) -> boto3.Session:
    return boto3.Session(profile_name=profile_name, region_name=region_name)


# The composition root makes a new boto3 session per command, which parses botocore's
# service models again (~0.4 s a command). In-process, one session per (profile, region)
# serves every command; nothing else about the wiring changes.
_SHARED_SESSIONS = types.SimpleNamespace(Session=_session)


@dataclass(frozen=True)
class Result:
    code: int | None  # the exit code; None if main() did not exit
    stdout: str
    stderr: str
    exception: BaseException | None  # escaped main(): a traceback for the operator

    @property
    def lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


@dataclass
class World:
    """One environment in moto, seeded with a service, a revision, an instance, a deploy."""

    environment: str
    root: Path
    service: str = "api"
    revision_id: str = ""
    baseline: dict[str, list[str]] | None = None  # the state every refusal must leave

    @property
    def aws(self) -> list[str]:
        return ["--env", self.environment, "--region", REGION]

    @property
    def tables(self) -> TableNames:
        return TableNames.for_environment(self.environment)

    def dynamodb(self) -> Any:
        return boto3.client("dynamodb", region_name=REGION, config=CLIENT_CONFIG)

    def wiring(self) -> Wiring:
        """The real composition root, on the shared boto3 session."""
        wiring = Wiring(AwsSettings(environment=self.environment, region=REGION))
        wiring.__dict__["session"] = _session(None, REGION)  # fills the cached_property
        return wiring

    def run(
        self,
        *args: str,
        stdin: bytes = b"",
        aws: bool = True,
        variables: Mapping[str, str | None] | None = None,
    ) -> Result:
        """`flotilla ARGS --env E --region R` in-process, as the console script runs it;
        `variables` are set (None: unset) in its environment for the call."""
        argv = ["flotilla", *args, *(self.aws if aws else [])]
        with CliRunner().isolation(input=stdin, env=dict(variables or {})) as (out, err, _):
            saved = sys.argv, wiring_module.boto3
            sys.argv = argv
            wiring_module.boto3 = _SHARED_SESSIONS  # type: ignore[assignment]
            code: int | None = None
            escaped: BaseException | None = None
            try:
                main()
            except SystemExit as exited:
                code = exited.code if isinstance(exited.code, int) else 1
            except BaseException as exc:
                escaped = exc
            finally:
                sys.argv, wiring_module.boto3 = saved
                sys.stdout.flush()
                sys.stderr.flush()
            return Result(code, out.getvalue().decode(), err.getvalue().decode(), escaped)

    def ok(self, *args: str, stdin: bytes = b"") -> str:
        result = self.run(*args, stdin=stdin)
        assert result.exception is None, repr(result.exception)
        assert result.code == 0, result.stderr
        return result.stdout

    def snapshot(self) -> dict[str, list[str]]:
        """Every item of every table of the environment, order-independent.

        Read from moto's in-process backend: the very items a consistent Scan returns,
        without six botocore round trips per hypothesis example (a Scan through the API
        is what `scan()` does, used where speed does not matter).
        """
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]
        scans: dict[str, list[str]] = {}
        for table in sorted(vars(self.tables).values()):
            items = backend.tables[table].all_items()
            scans[table] = sorted(
                json.dumps(i.to_json(), sort_keys=True, default=repr) for i in items
            )
        return scans

    def scan(self) -> dict[str, list[dict[str, Any]]]:
        """A full, consistent Scan of every table through the DynamoDB API."""
        client = self.dynamodb()
        scans: dict[str, list[dict[str, Any]]] = {}
        for table in sorted(vars(self.tables).values()):
            items: list[dict[str, Any]] = []
            request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
            while True:
                page = client.scan(**request)
                items += page["Items"]
                if "LastEvaluatedKey" not in page:
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            scans[table] = items
        return scans


def make_world(environment: str, root: Path) -> World:
    """Create the environment's stack and seed it (call inside mock_aws)."""
    create_environment_stack(environment)
    world = World(environment, root)
    world.ok("service", "create", world.service)
    source = root / "v1"
    source.mkdir()
    (source / "web.service").write_text(UNIT)
    (source / "web.env").write_text(f"DB_PASSWORD='{SECRET}'\nPORT=8080\n")
    world.revision_id = world.ok("revision", "add", world.service, str(source), "--label", "v1")
    world.revision_id = world.revision_id.strip()
    world.ok("weights", world.service, "v1=100")
    store = world.wiring().store
    now = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    store.register_instance(
        Instance("i-1", world.service, "0.1.0", registered_at=now, heartbeat_at=now),
        expires_at=now + timedelta(days=3650),
    )
    store.create_deploy(
        DeployCheckpoint(
            id="i-1.1",
            service=world.service,
            instance_id="i-1",
            from_revision=None,
            to_revision=world.revision_id,
            state="done",
            machine_version=1,
            created_at=now,
            updated_at=now + timedelta(seconds=9),
            outcome=Outcome.SUCCEEDED,
            history=(
                Transition("installing", now, now + timedelta(seconds=4), attempt=1),
                Transition("starting", now + timedelta(seconds=4), now + timedelta(seconds=9), 1),
            ),
        )
    )
    return world


def assert_refused(
    world: World,
    args: Sequence[str],
    *,
    codes: Sequence[int] = (1, 2),
    stdin: bytes = b"",
    aws: bool = True,
    variables: Mapping[str, str | None] | None = None,
) -> Result:
    """The command fails cleanly: non-zero exit, one error line, no traceback, nothing stored."""
    if world.baseline is None:
        world.baseline = world.snapshot()
    before = world.baseline
    result = world.run(*args, stdin=stdin, aws=aws, variables=variables)
    after = world.snapshot()
    world.baseline = after  # one failure must not make every later test fail too
    assert_clean_failure(result, codes)
    assert after == before, "a refused command changed stored state"
    return result


def assert_clean_failure(result: Result, codes: Sequence[int] = (1, 2)) -> None:
    assert result.exception is None, f"traceback: {result.exception!r}"
    assert result.code in codes, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    # Every error, usage errors included (cli.main): exactly one line starting `error:`,
    # nothing on stdout, and no control character (a name echoed raw could be a terminal
    # escape sequence).
    assert result.stderr.startswith("error:"), result.stderr
    assert result.stderr.endswith("\n"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    controls = [c for c in result.stderr[:-1] if unicodedata.category(c) == "Cc"]
    assert not controls, result.stderr
    assert result.stdout == "", result.stdout
