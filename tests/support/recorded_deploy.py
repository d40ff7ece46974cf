"""An `api` agent's whole deploy on moto, with every DynamoDB request it makes recorded,
and the worker policies of the service template to judge them by.

Shared by tests/security/test_scoped_keys.py (judged by the rules of
tests/support/iam_grants.py) and tests/security/test_policy_simulator.py (judged by a
maintained IAM evaluator too).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moto import mock_aws

from flotilla.adapters.dynamodb_locks import DynamoDBLockService
from flotilla.adapters.dynamodb_store import DynamoDBStateStore
from flotilla.cli.agent_assembly import build_agent
from flotilla.engine.clock import FakeClock
from flotilla.engine.config import TableNames
from flotilla.engine.deploy.agent import AgentSettings
from tests.support.aws import create_environment_stack, dynamodb_client
from tests.support.cluster import Cluster
from tests.support.iam_grants import Request, RequestRecorder
from tests.unit.test_worker_policy import ACCOUNT, ENV, REGION, role_policy

OTHERS = ("billing", "api2", "api-b", "ap", "a")  # names that begin like `api`, and others


def worker_policy(service: str) -> dict[str, Any]:
    """The worker role's policy of cfn_templates/service.yaml, resolved for `service`."""
    parameters = {"EnvironmentName": ENV, "ServiceName": service, "LoadBalancerKind": "none"}
    return role_policy("service.yaml", "WorkerRole", parameters)


@dataclass
class World:
    cluster: Cluster
    client: Any
    recorder: RequestRecorder


@contextmanager
def recording_world(tmp_path: Path) -> Iterator[World]:
    """An environment on moto with service `api`, its store and locks on DynamoDB, and a
    recorder on the DynamoDB client (off until a test turns it on)."""
    with mock_aws():
        create_environment_stack(ENV)
        client = dynamodb_client()
        clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
        cluster = Cluster(tmp_path, clock=clock, with_load_balancer=False)
        tables = TableNames.for_environment(ENV)
        cluster.store = DynamoDBStateStore(client, tables, clock)
        cluster.locks = DynamoDBLockService(client, tables.locks, clock)
        cluster.service = cluster.store.create_service(cluster.service)
        try:
            yield World(cluster, client, RequestRecorder(client, REGION, ACCOUNT))
        finally:
            cluster.shutdown()


def run_agent(cluster: Cluster, iterations: int) -> None:
    """Runs the agent of `api`'s instance i-1 for `iterations` wake-ups, then stops it."""
    stop = threading.Event()
    done = [0]

    def wait(seconds: float) -> None:
        cluster.clock.advance(seconds)
        done[0] += 1
        if done[0] >= iterations:
            stop.set()

    agent = build_agent(
        AgentSettings(instance_id="i-1", service="api", agent_version="test", owner="agent-a"),
        cluster.adapters("i-1"),
        stop=stop,
        wait_for_wakeup=wait,
    )
    agent.run()


def record_an_agents_deploy(world: World) -> set[Request]:
    """The DynamoDB requests of `api`'s agent on i-1 through registration, a deploy of its
    assigned revision (checkpoints, deploy lock, current revision) and its release."""
    cluster = world.cluster
    v1 = cluster.revision("v1")
    cluster.instance("i-1")
    cluster.assign("i-1", v1)  # the scheduler's write: not the worker's
    world.recorder.recording = True
    run_agent(cluster, iterations=30)
    world.recorder.recording = False
    assert cluster.store.get_instance("api", "i-1").current_revision == v1.id  # it deployed
    return {r for r in world.recorder.requests if "dynamodb" in r.action}
