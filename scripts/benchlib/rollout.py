"""Rollout time for 20 instances with `max_in_flight` 1, 2 and 5, against the ideal
`ceil(N/k) × one deploy`.

Twenty real agent processes (process runtime, `--poll-interval 0.3`) and one real
scheduler process (`--interval 600`: after its first pass only SQS events make it act, as
in tests/integration/test_scheduler_processes.py) on a moto server; deploys without a load
balancer, settle 1 s. Each run gives a new revision all the weight, as `flotilla weights`
does; the rollout time runs from that write to the end of the last deploy; one deploy
is the median deploy of that run (created → finished). What the ideal leaves out is the
pacing: the scheduler's reaction to each `deploy_finished` event and the agents' polls.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from benchlib.figures import Figure
from benchlib.fleet import Fleet, seconds_between, stopping
from flotilla.engine.records import RolloutPolicy
from flotilla.engine.updates import modify_service
from testbed.agents import aws_world, start_scheduler

INSTANCES = 20
IN_FLIGHT = (1, 2, 5)


def with_max_in_flight(fleet: Fleet, slots: int) -> None:
    policy = RolloutPolicy(str(slots))
    modify_service(fleet.world.store, fleet.service, lambda s: replace(s, rollout=policy))


def run(runs: int, quick: bool) -> list[Figure]:
    times: dict[int, list[float]] = {k: [] for k in IN_FLIGHT}
    ideals: dict[int, list[float]] = {k: [] for k in IN_FLIGHT}
    deploys: dict[int, list[float]] = {k: [] for k in IN_FLIGHT}
    with tempfile.TemporaryDirectory() as work, aws_world(f"rollout{os.getpid()}") as world:
        fleet = Fleet(world, Path(work), "rollout", size=INSTANCES, max_in_flight="5")
        scheduler = start_scheduler(world, Path(work), "bench")
        with stopping(scheduler):
            try:
                fleet.start()
                first = fleet.new_revision()
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
                        times[slots].append(seconds_between(began, ended))
                        ideals[slots].append(math.ceil(INSTANCES / slots) * one)
                        deploys[slots].append(one)
                    print(f"  rollout: max_in_flight {slots} measured", file=sys.stderr)
            finally:
                fleet.stop()
    figures = []
    for slots in IN_FLIGHT:
        batches = math.ceil(INSTANCES / slots)
        ratio = statistics.median(t / i for t, i in zip(times[slots], ideals[slots], strict=True))
        figures += [
            Figure("rollout", f"rollout of {INSTANCES} instances, max_in_flight {slots}", "s",
                   times[slots], f"{ratio:.2f} × the ideal (median of the runs' ratios)",
                   target=f"≤ {1.10 * statistics.median(ideals[slots]):.1f} s (1.10 × ideal)"),
            Figure("rollout", f"  ideal: {batches} × one deploy", "s", ideals[slots],
                   f"one deploy: median {statistics.median(deploys[slots]):.2f} s"),
        ]  # fmt: skip
    return figures
