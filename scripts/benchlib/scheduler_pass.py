"""The scheduler's pass: its time and the store operations it makes.

- On the in-memory store (what the scheduler computes, without network): 1k, 10k and
  100k instances over 1, 100 and 10 000 services; the first pass (every instance
  assigned), a pass where nothing changed, a pass after 10 % of the services changed
  weights.
- On Amazon's DynamoDB Local, 100 services of 10 instances and 1 000 services of one:
  time and DynamoDB calls of a pass where nothing changed and of one after 10 % of the
  services changed.

"Unchanged" is a pass of a scheduler that has run before, once everything settled: it
skips the quiet services whose records did not change (scheduler/pass_.py), so it costs
the scan of the services table, whatever the number of services it skips.
"""

from __future__ import annotations

import sys
from typing import Any

from benchlib.figures import Figure, seconds_of
from flotilla.adapters.dynamodb_store import DynamoDBStateStore
from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.adapters.templates import create_tables
from flotilla.engine.clock import FakeClock, SystemClock
from flotilla.engine.config import TableNames
from flotilla.engine.ports import StateStore
from flotilla.engine.updates import set_weights
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from testbed.aws import CallCounter, dynamodb_client, dynamodb_local
from testbed.scheduler_world import V1, V2, CountingStore, make_service, register

SHAPES = [  # (instances, services)
    (1_000, 1),
    (1_000, 100),
    (10_000, 1),
    (10_000, 100),
    (10_000, 10_000),
    (100_000, 1),
    (100_000, 100),
    (100_000, 10_000),
]
QUICK_SHAPES = [(1_000, 100), (10_000, 100), (100_000, 100)]
PASSES = ("first", "unchanged", "10% changed")


def build(store: StateStore, clock: Any, instances: int, services: int) -> list[str]:
    names = [f"svc-{n:05d}" for n in range(services)]
    per_service = instances // services
    for name in names:
        make_service(store, name, max_in_flight="100%")
        register(store, clock, name, per_service, prefix=f"{name}-i")
    return names


def settle(store: StateStore, names: list[str]) -> None:
    """What agents would do: every instance now runs its assignment."""
    for name in names:
        for instance in store.list_instances(name):
            if instance.assigned_revision != instance.current_revision:
                store.set_current_revision(name, instance.id, instance.assigned_revision)


def one_memory_run(instances: int, services: int) -> dict[str, tuple[float, int, int]]:
    """pass → (seconds, store reads, store writes)."""
    clock = FakeClock()
    counting = CountingStore(MemoryStateStore(clock))
    store: Any = counting
    names = build(store, clock, instances, services)
    passes = SchedulerPass(store, clock, PassSettings(), guard=lambda: 1)
    figures: dict[str, tuple[float, int, int]] = {}

    def measure(label: str) -> None:
        counting.reset()
        seconds, _ = seconds_of(passes.run)
        reads = sum(counting.calls.values()) - counting.writes
        figures[label] = (seconds, reads, counting.writes)

    measure("first")
    settle(store, names)
    passes.run()  # records the rollouts as complete
    passes.run()  # finds every service quiet
    measure("unchanged")
    for name in names[: max(1, len(names) // 10)]:
        set_weights(store, name, {V1: 0, V2: 100})
    measure("10% changed")
    return figures


def memory_figures(runs: int, shapes: list[tuple[int, int]]) -> list[Figure]:
    figures = []
    for instances, services in shapes:
        results = [one_memory_run(instances, services) for _ in range(runs)]
        for label in PASSES:
            _, reads, writes = results[0][label]
            figures.append(
                Figure(
                    "scheduler",
                    f"pass, memory store, {instances:,} inst × {services:,} svc, {label}",
                    "ms",
                    [r[label][0] * 1000 for r in results],
                    f"store reads {reads:,}, writes {writes:,}",
                )
            )
        print(f"  scheduler: {instances:,} instances x {services:,} services", file=sys.stderr)
    return figures


DYNAMODB_SHAPES = [(1_000, 100), (1_000, 1_000)]  # (instances, services)


def dynamodb_figures(runs: int) -> list[Figure]:
    figures = []
    with dynamodb_local() as endpoint:
        for instances, services in DYNAMODB_SHAPES:
            figures += dynamodb_shape(endpoint, runs, instances, services)
    return figures


def dynamodb_shape(endpoint: str, runs: int, instances: int, services: int) -> list[Figure]:
    times: dict[str, list[float]] = {"unchanged": [], "10% changed": []}
    calls: dict[str, list[float]] = {"unchanged": [], "10% changed": []}
    writes: list[int] = []
    for run in range(runs):
        environment = f"bench{services}x{run}"
        client = dynamodb_client(endpoint)
        create_tables(client, environment)
        clock = SystemClock()
        store = DynamoDBStateStore(client, TableNames.for_environment(environment), clock)
        names = build(store, clock, instances, services)
        passes = SchedulerPass(store, clock, PassSettings(), guard=lambda: 1)
        passes.run()
        settle(store, names)
        passes.run()  # records the rollouts as complete
        passes.run()  # finds every service quiet
        counter = CallCounter(client)
        seconds, _ = seconds_of(passes.run)
        times["unchanged"].append(seconds * 1000)
        calls["unchanged"].append(counter.total)
        for name in names[: services // 10]:
            set_weights(store, name, {V1: 0, V2: 100})
        counter.reset()
        seconds, _ = seconds_of(passes.run)
        times["10% changed"].append(seconds * 1000)
        calls["10% changed"].append(counter.total)
        writes.append(counter.calls["UpdateItem"] + counter.calls["PutItem"])
    figures = []
    for label in times:
        shape = f"DynamoDB Local, {instances:,} inst × {services:,} svc, {label}"
        figures.append(Figure("scheduler", f"pass, {shape}", "ms", times[label]))
        note = f"of which writes {max(writes)}" if label == "10% changed" else ""
        target = "independent of unchanged services" if label == "unchanged" else ""
        figures.append(Figure("scheduler", f"DynamoDB calls per pass, {shape}", "calls",
                              calls[label], note, target=target))  # fmt: skip
    return figures


def run(runs: int, quick: bool) -> list[Figure]:
    return memory_figures(runs, QUICK_SHAPES if quick else SHAPES) + dynamodb_figures(runs)
