"""The composition root: builds real adapters from settings. The only place that does
(the agent itself is assembled from them in `cli.agent_assembly`).

Settings come from command-line options first, then `FLOTILLA_*` environment variables,
then defaults, each validated where it is read (`cli.settings`: a bad one is one line
naming it and where it came from); AWS credentials follow boto3's standard chain
(profiles, instance roles), and what botocore refuses about them becomes one line here,
where sessions and clients are made. A command's clients answer a person in seconds
(`interactive`: `cli.aws_calls`); a daemon's keep botocore's patient settings.
The region is the one exception: botocore reads only `AWS_DEFAULT_REGION`, while EC2 user
data, the AWS CLI docs and most operators set `AWS_REGION`, so `--region`, then each of
`REGION_VARIABLES` in turn, then the profile's region decide it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, NoRegionError, ProfileNotFound

from flotilla.adapters.aws_errors import REGION_VARIABLES
from flotilla.adapters.dynamodb_codec import CLIENT_CONFIG, DYNAMODB_CLIENT_CONFIG
from flotilla.adapters.dynamodb_users import DynamoDBUserStore
from flotilla.cli import settings as setting_rules
from flotilla.engine.clock import Clock, SystemClock
from flotilla.engine.config import TableNames
from flotilla.engine.errors import ConfigurationError
from flotilla.engine.ports import Event, EventQueue, LoadBalancer, UnitRuntime
from flotilla.engine.records import LoadBalancerKind, LoadBalancerRef

if TYPE_CHECKING:  # imported where used: most commands need none of them (and
    # `flotilla keys`, run at every SSH login, needs only the users)
    from flotilla.adapters.artifacts import S3ArtifactStore
    from flotilla.adapters.cloudwatch_alarms import CloudWatchAlarms
    from flotilla.adapters.dynamodb_locks import DynamoDBLockService
    from flotilla.adapters.dynamodb_store import DynamoDBStateStore
    from flotilla.adapters.http_webhooks import HttpWebhooks
    from flotilla.adapters.package_index import PackageIndex
    from flotilla.adapters.secrets import KmsSecretBox
    from flotilla.adapters.sns_topic import SnsEventTopic
    from flotilla.adapters.sqs_events import SqsEventQueue
    from flotilla.adapters.sqs_wakeups import SqsWakeUps
    from flotilla.adapters.stacks import CloudFormationStacks
    from flotilla.cli.agent_runtime import RuntimeChoice
    from flotilla.engine.operations.steering import Operations


@dataclass(frozen=True)
class AwsSettings:
    """Where Flotilla's AWS resources are: environment name, region, profile, endpoint."""

    environment: str = "default"
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None  # a moto server or DynamoDB Local, for the demo and tests
    # Where each setting came from ("--region", "AWS_REGION", ...), for messages about it.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    # An endpoint per region (`FLOTILLA_ENDPOINT_URLS`), before `endpoint_url`.
    region_endpoints: Mapping[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def resolve(
        cls,
        environment: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
    ) -> AwsSettings:
        """Options first, then variables, then defaults, each validated (`cli.settings`)."""
        read = setting_rules.resolve(environment, region, profile, endpoint_url)
        settings = cls(
            read.environment,
            read.region,
            read.profile,
            read.endpoint_url,
            read.sources,
            read.region_endpoints,
        )
        return settings.in_region(read.region) if read.region else settings

    def in_region(self, region: str) -> AwsSettings:
        """The same settings for `region`, with that region's own endpoint if it has one."""
        return replace(
            self,
            region=region,
            endpoint_url=self.region_endpoints.get(region, self.endpoint_url),
        )


NO_REGION = (
    "no AWS region: pass --region, or set "
    + ", ".join(REGION_VARIABLES[:-1])
    + f" or {REGION_VARIABLES[-1]} (or a region in your profile)"
)


class Wiring:
    """Builds each adapter once, on first use."""

    def __init__(
        self,
        settings: AwsSettings,
        clock: Clock | None = None,
        *,
        interactive: bool = False,
        events_topic: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.interactive = interactive  # a person waits: short time-outs, retries said aloud
        self.tables = TableNames.for_environment(settings.environment)
        # The ARN of the SNS topic rollout events go to (`topic`); only the scheduler
        # publishes, and it is told the ARN (`flotilla scheduler --events-topic`, set by
        # its user data from the stack) rather than building it from the account id: that
        # would cost an STS call at start, which a machine in a private subnet without an
        # STS endpoint cannot make, and the demo knows the ARN from its stack as well.
        self.events_topic = events_topic

    def in_region(self, region: str) -> Wiring:
        """This wiring's twin for `region` (the same environment, profile and clock)."""
        if region == self.settings.region:
            return self
        return Wiring(
            self.settings.in_region(region),
            self.clock,
            interactive=self.interactive,
            events_topic=self.events_topic,
        )

    @property
    def region(self) -> str:
        """The region this wiring's calls go to (the profile's, when none was given)."""
        return self.settings.region or self.session.region_name

    @cached_property
    def session(self) -> boto3.Session:
        try:
            session = boto3.Session(
                profile_name=self.settings.profile, region_name=self.settings.region
            )
        except ProfileNotFound as exc:
            raise self._missing_profile() from exc
        except BotoCoreError as exc:  # a config file it cannot parse, and the like
            raise setting_rules.configuration_error(
                exc, self.settings.sources, "reading the AWS settings"
            ) from exc
        if session.region_name is None:
            raise ConfigurationError(NO_REGION)
        return session

    def client(self, service: str) -> Any:
        make_client: Any = self.session.client  # typed per service name; ours is dynamic
        config = DYNAMODB_CLIENT_CONFIG if service == "dynamodb" else CLIENT_CONFIG
        if self.interactive:
            from flotilla.cli.aws_calls import CLI_CLIENT_CONFIG

            config = config.merge(CLI_CLIENT_CONFIG)
        try:
            client = make_client(service, endpoint_url=self.settings.endpoint_url, config=config)
        except NoRegionError as exc:
            raise ConfigurationError(NO_REGION) from exc
        except ProfileNotFound as exc:  # botocore may look the profile up only now
            raise self._missing_profile() from exc
        except (BotoCoreError, ValueError) as exc:  # a region or endpoint botocore refuses
            raise setting_rules.configuration_error(
                exc, self.settings.sources, f"making the {service} client"
            ) from exc
        if not self.interactive:
            return client
        from flotilla.cli.aws_calls import RetryingClient

        return RetryingClient(client, self.clock)

    def _missing_profile(self) -> ConfigurationError:
        where = self.settings.sources.get("profile", "--profile")
        name = self.settings.profile or os.environ.get("AWS_PROFILE", "")
        return ConfigurationError(
            f"AWS profile {name!r} (from {where}) is not configured; see "
            "`aws configure list-profiles`, or fix ~/.aws/config"
        )

    @cached_property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @cached_property
    def store(self) -> DynamoDBStateStore:
        from flotilla.adapters.dynamodb_store import DynamoDBStateStore

        return DynamoDBStateStore(self.dynamodb, self.tables, self.clock)

    @cached_property
    def locks(self) -> DynamoDBLockService:
        from flotilla.adapters.dynamodb_locks import DynamoDBLockService

        return DynamoDBLockService(self.dynamodb, self.tables.locks, self.clock)

    @cached_property
    def events(self) -> SqsEventQueue:
        from flotilla.adapters.sqs_events import SqsEventQueue

        return SqsEventQueue.for_environment(self.client("sqs"), self.settings.environment)

    def wakeups(self, stop: threading.Event | None = None) -> SqsWakeUps:
        """The agents' wake-up channels; `stop` ends an agent's waits at once (SIGTERM)."""
        from flotilla.adapters.sqs_wakeups import SqsWakeUps

        return SqsWakeUps(self.client("sqs"), self.settings.environment, stop=stop)

    @cached_property
    def alarms(self) -> CloudWatchAlarms:
        """The services' CloudWatch alarms, read by the scheduler's gates."""
        from flotilla.adapters.cloudwatch_alarms import CloudWatchAlarms

        return CloudWatchAlarms(self.client("cloudwatch"))

    @cached_property
    def webhooks(self) -> HttpWebhooks:
        """The rollouts' webhook gates, called with a User-Agent naming this Flotilla."""
        from flotilla.adapters.http_webhooks import HttpWebhooks

        return HttpWebhooks(user_agent=f"flotilla/{_version()} (rollout gate)")

    @cached_property
    def topic(self) -> SnsEventTopic:
        """The environment's events topic (`events_topic`), where rollout events go."""
        from flotilla.adapters.sns_topic import SnsEventTopic

        if self.events_topic is None:
            raise ConfigurationError(
                "no events topic: pass --events-topic ARN or set FLOTILLA_EVENTS_TOPIC (the "
                "environment stack's output EventsTopicArn)"
            )
        return SnsEventTopic(self.client("sns"), self.events_topic)

    @cached_property
    def users(self) -> DynamoDBUserStore:
        return DynamoDBUserStore(self.dynamodb, self.tables.users, self.clock)

    @cached_property
    def events_on_first_use(self) -> EventQueue:
        """`events`, looked up only when an event is sent (`_QueueOnFirstUse`)."""
        return _QueueOnFirstUse(self)

    @cached_property
    def operations(self) -> Operations:
        """The operator's operations; they wake the scheduler after the change is stored."""
        from flotilla.engine.operations.steering import Operations

        return Operations(self.store, self.events_on_first_use, self.clock)

    def secret_box(self, key_id: str | None = None) -> KmsSecretBox:
        """Seals and opens environments with `key_id`, by default the environment's key."""
        from flotilla.adapters.secrets import KmsSecretBox

        return KmsSecretBox(
            self.client("kms"), key_id or f"alias/flotilla-{self.settings.environment}"
        )

    def load_balancer(self, ref: LoadBalancerRef | None) -> LoadBalancer | None:
        """The adapter for a service's load balancer; None for a service without one."""
        if ref is None:
            return None
        if ref.kind is LoadBalancerKind.CLASSIC:
            from flotilla.adapters.elb_classic import ClassicLoadBalancer

            return ClassicLoadBalancer(self.client("elb"), ref.name)
        from flotilla.adapters.elbv2 import TargetGroupLoadBalancer

        return TargetGroupLoadBalancer(self.client("elbv2"), ref.name)

    @cached_property
    def stacks(self) -> CloudFormationStacks:
        from flotilla.adapters.stacks import CloudFormationStacks

        return CloudFormationStacks(self.client("cloudformation"), self.clock)

    def artifacts(self, bucket: str) -> S3ArtifactStore:
        """The environment's artifact bucket (its name is an output of the stack)."""
        from flotilla.adapters.artifacts import S3ArtifactStore

        return S3ArtifactStore(self.client("s3"), bucket)

    @cached_property
    def package_index(self) -> PackageIndex:
        """Where the wheel's dependencies are pinned from: `FLOTILLA_PACKAGE_INDEX` or PyPI."""
        from flotilla.adapters.package_index import index_from

        return index_from(os.environ)


def _version() -> str:
    from importlib import metadata

    from flotilla.cli import DISTRIBUTION

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


class _QueueOnFirstUse:
    """The wiring's `EventQueue`, looked up when first used. Finding the SQS queue is a
    call that can fail; an operator's change is stored before the scheduler is woken, so
    that failure must cost only the wake-up, never the change."""

    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring

    def send(self, event: Event) -> None:
        self._wiring.events.send(event)

    def receive(self, *, wait: timedelta, max_events: int = 10) -> list[Event]:
        return self._wiring.events.receive(wait=wait, max_events=max_events)

    def ack(self, *events: Event) -> None:
        self._wiring.events.ack(*events)


def unit_runtime(
    choice: RuntimeChoice, *, state_dir: Path, bus_address: str | None, unit_dir: Path | None
) -> UnitRuntime:
    """Where an agent runs units (`cli.agent_runtime` chose which, and why)."""
    from flotilla.cli.agent_runtime import PROCESS

    if choice.kind == PROCESS:
        return process_runtime(state_dir)
    from flotilla.adapters.systemd import SystemdRuntime

    return SystemdRuntime.connect(
        bus_address=bus_address, unit_dir=unit_dir, env_dir=state_dir / "env"
    )


def process_runtime(state_dir: Path) -> UnitRuntime:
    """The process runtime of an agent started with `--state-dir STATE_DIR`; also how the
    demo and the benchmarks stop the units such an agent left running."""
    from flotilla.adapters.process_runtime import ProcessRuntime

    return ProcessRuntime(state_dir / "process")
