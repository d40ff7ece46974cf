"""The deploy engine: its overhead per deploy (wall time minus the time spent in the unit
runtime) and its DynamoDB calls per deploy, against a moto server and Amazon's DynamoDB
Local. Deploys without a load balancer and with settle 0 s, so only the engine's own work
and its store calls remain; units are real processes (the process runtime).

Each backend first serves `WARM_UP` deploys that are not counted: DynamoDB Local is a
JVM, which runs its first few thousand requests before its compiler has made them fast
(a deploy's calls took 75 ms at first here, 40 ms after fifty deploys), as a store that
has been up a while does not. Their median is printed too, beside the counted ones."""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchlib.figures import Figure
from flotilla.adapters.dynamodb_locks import DynamoDBLockService
from flotilla.adapters.dynamodb_store import DynamoDBStateStore
from flotilla.adapters.templates import create_tables
from flotilla.engine.clock import SystemClock
from flotilla.engine.config import TableNames
from flotilla.engine.records import Service
from testbed.aws import CallCounter, dynamodb_client, dynamodb_local, moto_server
from testbed.cluster import Cluster

WARM_UP = 50  # deploys first, not counted (the module's doc)


class TimedRuntime:
    """Wraps a runtime to measure the time spent in systemd-like work (not engine overhead)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - began

        return timed


class CallClock:
    """Time spent inside DynamoDB calls (request sent to answer parsed), by botocore's events."""

    def __init__(self, client: Any) -> None:
        self.seconds = 0.0
        self._began = 0.0
        client.meta.events.register("before-call.dynamodb.*", self._before)
        client.meta.events.register("after-call.dynamodb.*", self._after)

    def _before(self, **_: Any) -> None:
        self._began = time.perf_counter()

    def _after(self, **_: Any) -> None:
        self.seconds += time.perf_counter() - self._began


def measure(endpoint: str, runs: int, work: Path) -> dict[str, list[float]]:
    client = dynamodb_client(endpoint)
    environment = f"bench{time.time_ns() % 10**8}"
    create_tables(client, environment)
    tables = TableNames.for_environment(environment)
    clock = SystemClock()
    cluster = Cluster(work, clock=clock)  # type: ignore[arg-type]
    cluster.store = DynamoDBStateStore(client, tables, clock)
    cluster.locks = DynamoDBLockService(client, tables.locks, clock)
    cluster.lb = type(cluster.lb)(clock)  # no drain, no health delay: only engine time remains
    cluster.service = cluster.store.create_service(Service("api", settle_seconds=0))
    cluster.with_load_balancer = False
    counter = CallCounter(client)
    in_calls = CallClock(client)
    figures: dict[str, list[float]] = {
        "overhead_ms": [],
        "calls": [],
        "wall_ms": [],
        "in_calls_ms": [],
        "engine_ms": [],
    }
    revisions = [cluster.revision(f"v{n}") for n in range(WARM_UP + runs)]
    cluster.instance("i-1")
    timed = TimedRuntime(cluster.runtime("i-1"))
    cluster.runtimes["i-1"] = timed  # type: ignore[assignment]
    for revision in revisions:
        cluster.assign("i-1", revision)
        counter.reset()
        timed.seconds = 0.0
        in_calls.seconds = 0.0
        began = time.perf_counter()
        cluster.deploy("i-1")
        wall = time.perf_counter() - began
        figures["wall_ms"].append(wall * 1000)
        figures["overhead_ms"].append((wall - timed.seconds) * 1000)
        figures["in_calls_ms"].append(in_calls.seconds * 1000)
        figures["engine_ms"].append((wall - timed.seconds - in_calls.seconds) * 1000)
        figures["calls"].append(counter.total)
    cluster.shutdown()
    figures["warm_up_ms"] = figures["overhead_ms"][:WARM_UP]
    for name in ("overhead_ms", "calls", "wall_ms", "in_calls_ms", "engine_ms"):
        del figures[name][:WARM_UP]
    return figures


def run(runs: int, quick: bool) -> list[Figure]:
    figures = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        backends = {
            "moto server": stack.enter_context(moto_server()),
            "DynamoDB Local": stack.enter_context(dynamodb_local()),
        }
        for name, endpoint in backends.items():
            measured = measure(endpoint, runs, work / name.replace(" ", "-"))
            figures += [
                Figure("deploys", f"engine overhead per deploy, {name}", "ms",
                       measured["overhead_ms"], "wall time minus time in the unit runtime",
                       target="≤ 50 ms" if name == "DynamoDB Local" else ""),
                Figure("deploys", "  of which waiting for DynamoDB's answers", "ms",
                       measured["in_calls_ms"], "request sent to answer parsed, every call"),
                Figure("deploys", "  of which the engine's own work", "ms",
                       measured["engine_ms"], "the rest: Python, the machine, spans, codecs"),
                Figure("deploys", f"  the {WARM_UP} deploys before (not counted)", "ms",
                       measured["warm_up_ms"], "the same, while the backend warms up"),
                Figure("deploys", f"DynamoDB calls per deploy, {name}", "calls",
                       measured["calls"], "no load balancer, settle 0 s", target="≤ 12"),
                Figure("deploys", f"one deploy, wall time, {name}", "ms", measured["wall_ms"]),
            ]  # fmt: skip
    return figures
