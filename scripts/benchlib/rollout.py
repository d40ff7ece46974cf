"""Rollout time for 20 instances with `max_in_flight` 1, 2 and 5, against the ideal
`ceil(N/k) × one deploy`.

Twenty real agent processes (process runtime, `flotilla agent`'s own settings) and one
real scheduler process (`--interval 600`: after its first pass only SQS events make it
act, as in tests/integration/test_scheduler_processes.py); deploys without a load
balancer, settle 1 s. Each run gives a new revision all the weight, as `flotilla weights`
does; the rollout time runs from that write to the end of the last deploy; one deploy
is the median deploy of that run (created → finished). What the ideal leaves out is the
pacing: the scheduler's reaction to each `deploy_finished` event and the agents' wake-ups.

The figure with the target keeps the tables on Amazon's DynamoDB Local (SQS, KMS and the
rest on a moto server). The same rollouts with the tables on moto too are printed for
reference: moto answers a query on a secondary index by reading every item of the table
(the scheduler's listing of a rollout's deploys took 0.3–0.4 s there by the end of a
run, 5–10 ms on DynamoDB Local), so on moto the figure measures the emulator's index.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchlib.figures import Figure
from benchlib.fleet import Fleet, seconds_between, stopping
from flotilla.engine.records import RolloutPolicy
from flotilla.engine.updates import modify_service
from testbed.agents import aws_world, start_scheduler

INSTANCES = 20
IN_FLIGHT = (1, 2, 5)
STORES = {"DynamoDB Local": True, "moto": False}  # name: tables on DynamoDB Local


@dataclass
class Measured:
    times: list[float] = field(default_factory=list)
    ideals: list[float] = field(default_factory=list)
    deploys: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(t / i for t, i in zip(self.times, self.ideals, strict=True))


def with_max_in_flight(fleet: Fleet, slots: int) -> None:
    policy = RolloutPolicy(str(slots))
    modify_service(fleet.world.store, fleet.service, lambda s: replace(s, rollout=policy))


def measure(runs: int, *, dynamodb_local: bool) -> dict[int, Measured]:
    measured = {k: Measured() for k in IN_FLIGHT}
    environment = f"rollout{os.getpid()}"
    with (
        tempfile.TemporaryDirectory() as work,
        aws_world(environment, dynamodb_local=dynamodb_local) as world,
    ):
        fleet = Fleet(world, Path(work), "rollout", size=INSTANCES, max_in_flight="5")
        scheduler = start_scheduler(world, Path(work), "bench")
        with stopping(scheduler):
            try:
                fleet.start()
                first = fleet.new_revision()  # also warms the store (a JVM: DynamoDB Local)
                fleet.roll_to(first)
                fleet.wait_until_all_run(first)
                for slots in IN_FLIGHT:
                    with_max_in_flight(fleet, slots)
                    for _ in range(runs):
                        revision = fleet.new_revision()
                        began = fleet.roll_to(revision)
                        done = fleet.wait_until_all_run(revision, timeout=600)
                        one = statistics.median(
                            seconds_between(d.created_at, d.updated_at) for d in done
                        )
                        ended = max(d.updated_at for d in done)
                        measured[slots].times.append(seconds_between(began, ended))
                        measured[slots].ideals.append(math.ceil(INSTANCES / slots) * one)
                        measured[slots].deploys.append(one)
                    print(f"  rollout: max_in_flight {slots} measured", file=sys.stderr)
            finally:
                fleet.stop()
    return measured


def run(runs: int, quick: bool) -> list[Figure]:
    figures = []
    for store, on_dynamodb_local in STORES.items():
        print(f"  rollout: tables on {store}", file=sys.stderr)
        for slots, m in measure(runs, dynamodb_local=on_dynamodb_local).items():
            batches = math.ceil(INSTANCES / slots)
            target = f"≤ {1.10 * statistics.median(m.ideals):.1f} s (1.10 × ideal)"
            figures += [
                Figure("rollout", f"rollout of {INSTANCES} instances, max_in_flight {slots}, "
                       f"tables on {store}", "s", m.times,
                       f"{m.ratio:.2f} × the ideal (median of the runs' ratios)",
                       target=target if on_dynamodb_local else "(reference)"),
                Figure("rollout", f"  ideal: {batches} × one deploy", "s", m.ideals,
                       f"one deploy: median {statistics.median(m.deploys):.2f} s"),
            ]  # fmt: skip
    return figures
