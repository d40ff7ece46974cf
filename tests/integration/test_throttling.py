"""Throttling on DynamoDB (injected into botocore itself) and on the load balancer: the
deploy completes, and the retries show as events on the spans of the calls retried."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flotilla.adapters.dynamodb_locks import DynamoDBLockService
from flotilla.adapters.dynamodb_store import DynamoDBStateStore
from flotilla.engine.checkpoint import Outcome
from flotilla.engine.clock import FakeClock
from flotilla.engine.config import TableNames
from tests.support.aws import create_environment_stack, dynamodb_client
from tests.support.cluster import Cluster


class Throttler:
    """Answers bursts of DynamoDB calls with ThrottlingException, before they are sent."""

    def __init__(self, client: Any, every: int = 12, burst: int = 3) -> None:
        self.counter = itertools.count()
        self.every = every
        self.burst = burst
        self.throttled = 0
        self.active = False
        client.meta.events.register("before-call.dynamodb.*", self.maybe_throttle)

    def maybe_throttle(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        # Bursts as long as botocore's own attempts, so the engine's retries are needed too.
        if not self.active or next(self.counter) % self.every >= self.burst:
            return None
        self.throttled += 1
        error = {
            "Code": "ThrottlingException",
            "Message": "Rate of requests exceeds the allowed throughput.",
        }
        parsed = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400, "RetryAttempts": 0}}
        return AWSResponse("https://dynamodb.invalid", 400, {}, None), parsed


@pytest.fixture
def throttled_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Throttler]]:
    with mock_aws():
        create_environment_stack("throttle")
        client = dynamodb_client()
        clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
        cluster = Cluster(tmp_path, clock=clock)
        tables = TableNames.for_environment("throttle")
        cluster.store = DynamoDBStateStore(client, tables, clock)
        cluster.locks = DynamoDBLockService(client, tables.locks, clock)
        cluster.service = cluster.store.create_service(cluster.service)
        throttler = Throttler(client)
        yield cluster, throttler
        cluster.shutdown()


def test_a_deploy_completes_through_dynamodb_and_load_balancer_throttling(
    throttled_cluster: tuple[Cluster, Throttler], spans: InMemorySpanExporter
) -> None:
    cluster, throttler = throttled_cluster
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    instance = cluster.store.get_instance("api", "i-1")
    runner = cluster.runner("i-1")
    cluster.lb.fail_next(3)
    throttler.active = True
    checkpoint = runner.create(instance, cluster.service)
    done = runner.run(checkpoint.id, cluster.service)
    throttler.active = False
    assert done.outcome is Outcome.SUCCEEDED
    assert throttler.throttled >= 6
    retried = [
        (span.name, event.attributes)
        for span in spans.get_finished_spans()
        for event in span.events
        if event.name == "retry"
    ]
    assert any(name.startswith("lb.") for name, _ in retried), retried
    assert retried, "no retry was recorded as a span event"
    assert {span.name for span in spans.get_finished_spans()} >= {
        "deploy.locking",
        "deploy.healthy",
    }
