"""A rollout's gates end to end on a moto server: CloudWatch alarms (moto's, read by the
CloudWatch adapter) and a webhook (a local HTTP server, called by the HTTP adapter), as
the scheduler reads them and as `rollout status` and `history` show them (issue 16).

Services and revisions go through the CLI, instances and deploys through the store (fake
agents), assignments through real scheduler passes with the environment's own gate
readers (`Wiring.alarms`, `Wiring.webhooks`).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flotilla.engine.clock import SystemClock
from tests.integration.cli_world import CliWorld, cli_world
from tests.support.scheduler_world import FakeAgents, register


class Refusing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


class World(CliWorld):
    def alarm(self, name: str, state: str) -> None:
        cloudwatch = self.wiring.client("cloudwatch")
        cloudwatch.put_metric_alarm(
            AlarmName=name, MetricName="5xx", Namespace="api", Statistic="Sum", Period=60,
            EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold",
        )  # fmt: skip
        cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason="test")

    def settled(self, service: str, *settings: str) -> FakeAgents:
        """`service` with three instances on v1 (v2 added), its rollout complete."""
        self.cli.ok("service", "create", service, *settings)
        self.add_revisions(service, "v1", "v2")
        register(self.store, SystemClock(), service, 3, prefix=service)
        self.cli.ok("weights", service, "v1=100")
        agents = FakeAgents(self.store, SystemClock(), service)
        for _ in range(4):
            self.scheduler_pass(gates=True)
            agents.settle()
        self.scheduler_pass(gates=True)
        assert self.store.get_service(service).rollout_state.status.value == "complete"
        return agents


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with cli_world("rg", tmp_path_factory.mktemp("g")) as shared:
        yield World(shared.cli, shared.wiring, shared.tmp)


def test_an_alarm_in_alarm_during_a_bake_reverts_the_rollout(world: World) -> None:
    world.alarm("shop-5xx", "OK")
    agents = world.settled("shop", "--steps", "1:10m,100%", "--alarm", "shop-5xx")
    world.cli.ok("weights", "shop", "v1=0", "v2=100")
    world.scheduler_pass(gates=True)
    agents.settle()
    world.scheduler_pass(gates=True)  # step 1's one instance runs v2: the step bakes
    assert [w["kind"] for w in world.status("shop")["waiting_for"]] == ["bake"]
    world.alarm("shop-5xx", "ALARM")
    world.scheduler_pass(gates=True)
    history = world.cli.ok("history", "shop")
    assert "alarm shop-5xx in ALARM during step 1 of 2 (1, bake 600 s), baking" in history
    assert "restored the last good weights" in history
    for _ in range(3):
        world.scheduler_pass(gates=True)
        agents.settle()
    running = {i.current_revision for i in world.store.list_instances("shop")}
    assert len(running) == 1  # every instance back on v1
    assert world.store.get_service("shop").rollout_state.status.value == "complete"


def test_a_webhook_answering_500_holds_the_step_and_status_says_why(world: World) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/confirm"
    try:
        world.settled("gated", "--steps", "1,100%", "--webhook", url)
        world.cli.ok("weights", "gated", "v1=0", "v2=100")
        world.scheduler_pass(gates=True)
        v2 = next(r.id for r in world.store.list_revisions("gated") if r.label == "v2")
        assigned = [i.assigned_revision for i in world.store.list_instances("gated")]
        assert v2 not in assigned  # nothing moved: the gate is closed
        (gate,) = [w for w in world.status("gated")["waiting_for"] if w["kind"] == "gate"]
        assert f"webhook {url} answered 500" in gate["text"]
        assert "flotilla rollout promote gated" in gate["text"]
        text = world.cli.ok("rollout", "status", "gated")
        assert f"webhook {url} answered 500" in text
    finally:
        server.shutdown()
        server.server_close()
