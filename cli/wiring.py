"""The composition root: builds real adapters from settings. The only place that does.

Settings come from command-line options first, then `FLOTILLA_*` environment variables,
then defaults; AWS credentials follow boto3's standard chain (profiles, instance roles).
The region is the one exception: botocore reads only `AWS_DEFAULT_REGION`, while EC2 user
data, the AWS CLI docs and most operators set `AWS_REGION`, so `--region`, then each of
`REGION_VARIABLES` in turn, then the profile's region decide it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import boto3
from botocore.exceptions import NoRegionError, ProfileNotFound

from flotilla.adapters.aws_errors import REGION_VARIABLES
from flotilla.adapters.dynamodb_codec import CLIENT_CONFIG
from flotilla.adapters.dynamodb_locks import DynamoDBLockService
from flotilla.adapters.dynamodb_store import DynamoDBStateStore
from flotilla.adapters.dynamodb_users import DynamoDBUserStore
from flotilla.adapters.sqs_events import SqsEventQueue
from flotilla.engine.clock import Clock, SystemClock
from flotilla.engine.config import TableNames
from flotilla.engine.errors import ConfigurationError
from flotilla.engine.validation import environment_name


@dataclass(frozen=True)
class AwsSettings:
    """Where Flotilla's AWS resources are: environment name, region, profile, endpoint."""

    environment: str = "default"
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None  # a moto server or DynamoDB Local, for the demo and tests

    @classmethod
    def resolve(
        cls,
        environment: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
    ) -> AwsSettings:
        return cls(
            environment=environment_name(
                environment or os.environ.get("FLOTILLA_ENV") or "default"
            ),
            region=region or region_from_environment(),
            profile=profile or os.environ.get("FLOTILLA_PROFILE"),
            endpoint_url=endpoint_url or os.environ.get("FLOTILLA_ENDPOINT_URL"),
        )


NO_REGION = (
    "no AWS region: pass --region, or set "
    + ", ".join(REGION_VARIABLES[:-1])
    + f" or {REGION_VARIABLES[-1]} (or a region in your profile)"
)


def region_from_environment() -> str | None:
    """The first region named by `REGION_VARIABLES`; None leaves it to the profile."""
    for variable in REGION_VARIABLES:
        if value := os.environ.get(variable, "").strip():
            return value
    return None


class Wiring:
    """Builds each adapter once, on first use."""

    def __init__(self, settings: AwsSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.tables = TableNames.for_environment(settings.environment)

    @cached_property
    def session(self) -> boto3.Session:
        try:
            session = boto3.Session(
                profile_name=self.settings.profile, region_name=self.settings.region
            )
        except ProfileNotFound as exc:
            raise ConfigurationError(
                f"AWS profile {self.settings.profile!r} is not configured; "
                "check --profile or ~/.aws/config"
            ) from exc
        if session.region_name is None:
            raise ConfigurationError(NO_REGION)
        return session

    def client(self, service: str) -> Any:
        make_client: Any = self.session.client  # typed per service name; ours is dynamic
        try:
            return make_client(
                service, endpoint_url=self.settings.endpoint_url, config=CLIENT_CONFIG
            )
        except NoRegionError as exc:
            raise ConfigurationError(NO_REGION) from exc

    @cached_property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @cached_property
    def store(self) -> DynamoDBStateStore:
        return DynamoDBStateStore(self.dynamodb, self.tables, self.clock)

    @cached_property
    def locks(self) -> DynamoDBLockService:
        return DynamoDBLockService(self.dynamodb, self.tables.locks, self.clock)

    @cached_property
    def events(self) -> SqsEventQueue:
        return SqsEventQueue.for_environment(self.client("sqs"), self.settings.environment)

    @cached_property
    def users(self) -> DynamoDBUserStore:
        return DynamoDBUserStore(self.dynamodb, self.tables.users, self.clock)
