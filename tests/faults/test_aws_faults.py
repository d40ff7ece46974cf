"""DynamoDB and ELB failing at a rate: throttles, 5xx, timeouts, answers lost after the
write was applied; then the whole DynamoDB endpoint down for 30 s.

AWS is a moto server in its own process behind a TCP proxy (tests/support/faults.py).
Faults are injected into the boto3 clients through botocore's `before-send` event, so
botocore's own retries (standard mode, CLIENT_CONFIG), the adapters' error translation and
the engine's retry policies all take part, as they would against AWS. The scheduler pass
and the agents are the real ones; the units run in memory (adapters/memory_runtime.py).
FLOTILLA_FAULT_RATE sets the share of failed requests (default 0.15), FLOTILLA_FAULT_SEED
replays a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import boto3
import pytest

from flotilla.adapters.dynamodb_codec import CLIENT_CONFIG
from flotilla.adapters.dynamodb_locks import DynamoDBLockService
from flotilla.adapters.dynamodb_store import DynamoDBStateStore
from flotilla.adapters.elb_classic import ClassicLoadBalancer
from flotilla.adapters.memory_runtime import MemoryUnitRuntime
from flotilla.adapters.secrets import LocalSecretBox
from flotilla.cli.agent_assembly import AgentAdapters, build_agent
from flotilla.engine.checkpoint import Outcome
from flotilla.engine.clock import Clock, FakeClock, SystemClock
from flotilla.engine.config import TableNames
from flotilla.engine.deploy.agent import Agent, AgentSettings
from flotilla.engine.errors import FlotillaError
from flotilla.engine.liveness import expiry_for
from flotilla.engine.ports import TargetState
from flotilla.engine.records import (
    Instance,
    LoadBalancerKind,
    LoadBalancerRef,
    Revision,
    RolloutPolicy,
    Service,
)
from flotilla.engine.revisions import build_revision
from flotilla.engine.updates import modify_service
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from tests.support.aws import REGION, create_environment_stack, dynamodb_client, moto_server
from tests.support.faults import BotocoreFaults, EndpointProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow]

RATE = float(os.environ.get("FLOTILLA_FAULT_RATE") or 0.15)
UNIT = {"api.service": "[Service]\nType=exec\nExecStart=/usr/bin/api\n"}


@pytest.fixture(scope="module")
def server() -> Iterator[EndpointProxy]:
    with moto_server() as endpoint:
        proxy = EndpointProxy(int(endpoint.rsplit(":", 1)[1]))
        try:
            yield proxy
        finally:
            proxy.down()


@dataclass
class AwsFleet:
    """A service of three EC2 instances behind a classic ELB, on the proxied moto server."""

    proxy: EndpointProxy
    environment: str
    clock: Clock
    seed: int
    rate: float = RATE

    def __post_init__(self) -> None:
        endpoint = self.proxy.endpoint
        create_environment_stack(self.environment, endpoint)
        self.tables = TableNames.for_environment(self.environment)
        # Clean clients, for setting up and for checking the end state.
        self.clean = DynamoDBStateStore(dynamodb_client(endpoint), self.tables, self.clock)
        self.clean_locks = DynamoDBLockService(
            dynamodb_client(endpoint), self.tables.locks, self.clock
        )
        # Only DynamoDB goes through the proxy: "the DynamoDB endpoint down" leaves ELB up.
        self.elb_endpoint = f"http://127.0.0.1:{self.proxy.target_port}"
        elb = boto3.client(
            "elb", region_name=REGION, endpoint_url=self.elb_endpoint, config=CLIENT_CONFIG
        )
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=self.elb_endpoint)
        self.balancer_name = f"lb-{self.environment}"
        elb.create_load_balancer(
            LoadBalancerName=self.balancer_name,
            Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 8080}],
            AvailabilityZones=[f"{REGION}a"],
        )
        self.clean_balancer = ClassicLoadBalancer(elb, self.balancer_name)
        reservation = ec2.run_instances(
            ImageId="ami-12345678", MinCount=3, MaxCount=3, InstanceType="t3.micro"
        )
        self.ids = sorted(i["InstanceId"] for i in reservation["Instances"])
        self.secrets = LocalSecretBox(os.urandom(32))
        self.runtimes = {i: MemoryUnitRuntime() for i in self.ids}
        # The faulty clients: one DynamoDB and one ELB client per process, as in production.
        self.faults: list[BotocoreFaults] = []
        self.service = self.clean.create_service(
            Service(
                "api",
                load_balancer=LoadBalancerRef(LoadBalancerKind.CLASSIC, self.balancer_name),
                drain_timeout_seconds=120,
                health_timeout_seconds=120,
                settle_seconds=1,
                rollout=RolloutPolicy("1"),
            )
        )
        now = self.clock.now()
        for instance_id in self.ids:
            self.clean.register_instance(
                Instance(instance_id, "api", "test", now, now), expires_at=expiry_for(now)
            )
            self.clean_balancer.register(instance_id)

    def faulty(self, service: Literal["dynamodb", "elb"]) -> Any:
        endpoint = self.proxy.endpoint if service == "dynamodb" else self.elb_endpoint
        client = boto3.client(
            service, region_name=REGION, endpoint_url=endpoint, config=CLIENT_CONFIG
        )
        kinds = ("throttle", "5xx", "timeout", "lost")
        self.faults.append(
            BotocoreFaults(client, rate=self.rate, seed=self.seed + len(self.faults), kinds=kinds)
        )
        return client

    def revision(self, label: str) -> Revision:
        revision = build_revision(
            "api", label, UNIT, {"api.service": {"K": label}}, self.secrets, self.clock.now()
        )
        return self.clean.put_revision(revision)

    def agent(self, instance_id: str, stop: threading.Event, then: Callable[[], None]) -> Agent:
        dynamodb = self.faulty("dynamodb")
        store = DynamoDBStateStore(dynamodb, self.tables, self.clock)
        locks = DynamoDBLockService(dynamodb, self.tables.locks, self.clock)
        balancer = ClassicLoadBalancer(self.faulty("elb"), self.balancer_name)
        adapters = AgentAdapters(
            store, locks, self.runtimes[instance_id], self.secrets, self.clock, lambda _: balancer
        )

        def wait(seconds: float) -> None:
            self.clock.sleep(min(seconds, 1.0))
            then()

        return build_agent(
            AgentSettings(instance_id, "api", "test", owner=f"{instance_id}-{time.time_ns()}"),
            adapters,
            stop=stop,
            wait_for_wakeup=wait,
        )

    def scheduler_pass(self) -> SchedulerPass:
        dynamodb = self.faulty("dynamodb")
        store = DynamoDBStateStore(dynamodb, self.tables, self.clock)
        return SchedulerPass(store, self.clock, PassSettings(), guard=lambda: 1)

    def settled(self, revision: Revision) -> bool:
        try:
            return all(
                self.clean.get_instance("api", i).current_revision == revision.id for i in self.ids
            )
        except FlotillaError:
            return False  # the test's own reads meet the outage too

    def roll_out(self, revision: Revision, *, limit: float = 240) -> None:
        """Passes and agents, one instance at a time, until every instance runs `revision`."""
        passes = self.scheduler_pass()
        deadline = time.monotonic() + limit
        while not self.settled(revision):
            assert time.monotonic() < deadline, f"the rollout did not converge: {self.describe()}"
            with contextlib.suppress(FlotillaError):  # the next pass tries again
                passes.run()
            for instance_id in self.ids:
                try:
                    instance = self.clean.get_instance("api", instance_id)
                except FlotillaError:
                    time.sleep(1)
                    continue
                unfinished = any(
                    not d.finished for d in self.clean.list_instance_deploys("api", instance_id)
                )
                if instance.assigned_revision in (None, instance.current_revision) and not (
                    unfinished
                ):
                    continue
                stop = threading.Event()
                polls = [0]

                def done(
                    instance_id: str = instance_id,
                    stop: threading.Event = stop,
                    polls: list[int] = polls,
                ) -> None:
                    polls[0] += 1
                    # A running agent never takes up a deploy that stopped in `unlocked`
                    # (tests/faults/test_agent_stalls.py): restart one that idles with an
                    # unfinished deploy, as an operator would, so the rest is still tested.
                    if polls[0] > 20 or time.monotonic() > deadline:
                        stop.set()
                    try:
                        current = self.clean.get_instance("api", instance_id)
                        deploys = self.clean.list_instance_deploys("api", instance_id)
                    except FlotillaError:
                        return
                    if current.current_revision == current.assigned_revision and all(
                        d.finished for d in deploys
                    ):
                        stop.set()

                self.agent(instance_id, stop, done).run()

    def describe(self) -> str:
        """Where each instance and deploy stands (for a failure's message)."""
        try:
            instances = [
                (i.id, i.assigned_revision, i.current_revision)
                for i in self.clean.list_instances("api")
            ]
            deploys = [(d.id, d.state, d.outcome, d.error) for d in self.clean.list_deploys("api")]
            service = self.clean.get_service("api")
            return f"{instances}; {deploys}; {service.rollout_state}; {service.history[-3:]}"
        except FlotillaError as unreadable:
            return unreadable.message

    def check_converged(self, revision: Revision) -> None:
        for deploy in [d for d in self.clean.list_deploys("api") if d.to_revision == revision.id]:
            assert deploy.finished, deploy
            assert deploy.outcome in (Outcome.SUCCEEDED, Outcome.ROLLED_BACK), deploy.error
            if deploy.outcome is Outcome.ROLLED_BACK:
                assert deploy.error
        for instance_id in self.ids:
            assert self.clean_balancer.state(instance_id) is TargetState.HEALTHY, instance_id
            assert self.runtimes[instance_id].active() == [
                n for n in self.runtimes[instance_id].owned_units() if revision.id[:12] in n
            ]
        now = self.clock.now()
        held = self.clean_locks.holders("deploy/api")
        assert all(lease.expires_at > now for lease in held)
        assert held == [], f"a finished rollout still holds {held}"


def _weights(service: Service, *, weights: dict[str, int]) -> Service:
    return dataclasses.replace(service, weights=weights)


def seed() -> int:
    chosen = int(os.environ.get("FLOTILLA_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nFLOTILLA_FAULT_SEED={chosen} FLOTILLA_FAULT_RATE={RATE}")
    return chosen


def test_a_rollout_converges_through_throttles_5xx_timeouts_and_lost_answers(
    server: EndpointProxy,
) -> None:
    fleet = AwsFleet(server, "faults1", FakeClock(datetime.now(UTC).replace(microsecond=0)), seed())
    v1, v2 = fleet.revision("v1"), fleet.revision("v2")
    operator = DynamoDBStateStore(fleet.faulty("dynamodb"), fleet.tables, fleet.clock)
    for revision in (v1, v2):
        # The operator's weight change goes through the faults too, and must land.
        modify_service(operator, "api", functools.partial(_weights, weights={revision.id: 100}))
        fleet.roll_out(revision)
        fleet.check_converged(revision)
    assert fleet.clean.get_service("api").weights == {v2.id: 100}
    injected = sum((f.injected for f in fleet.faults), start=type(fleet.faults[0].injected)())
    print(f"injected: {dict(injected)} over {sum(f.requests for f in fleet.faults)} requests")
    assert set(injected) == {"throttle", "5xx", "timeout", "lost"}


def test_the_dynamodb_endpoint_down_for_30_s_during_a_rollout(server: EndpointProxy) -> None:
    fleet = AwsFleet(server, "faults2", SystemClock(), seed(), rate=0.0)  # only the outage
    v1, v2 = fleet.revision("v1"), fleet.revision("v2")
    modify_service(fleet.clean, "api", lambda s: dataclasses.replace(s, weights={v1.id: 100}))
    fleet.roll_out(v1)
    modify_service(fleet.clean, "api", lambda s: dataclasses.replace(s, weights={v2.id: 100}))

    went_down = threading.Event()

    def outage() -> None:
        time.sleep(1.5)  # the rollout is under way
        fleet.proxy.down()
        went_down.set()
        time.sleep(30)
        fleet.proxy.up()

    cut = threading.Thread(target=outage)
    cut.start()
    started = time.monotonic()
    try:
        fleet.roll_out(v2, limit=180)
        finished_during_outage = went_down.is_set()  # read before waiting for the outage
    finally:
        cut.join()
    print(f"rollout through the outage: {time.monotonic() - started:.0f} s")
    assert finished_during_outage, "the rollout finished before the outage: it proved nothing"
    fleet.check_converged(v2)
