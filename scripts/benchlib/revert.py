"""A fast revert of 10 instances against the ideal `ceil(N/k) × one deploy`.

Ten real agent processes and one real scheduler process on a moto server, as in the
rollout benchmark. The service's rollout policy is one step of 100 % with a 10-minute
bake; `max_in_flight` is 2. Each run rolls a new revision onto every instance, then,
while that rollout bakes, the operator reverts it (`flotilla rollout revert`, through the
same operation): the revert skips the bake and the steps and moves every instance back
at `max_in_flight`. The revert time runs from the operator's write to the end of the
last deploy back; one deploy is the median deploy of the revert.
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
from flotilla.engine.operations.steering import Operations
from flotilla.engine.records import RolloutPolicy, RolloutStep
from flotilla.engine.updates import modify_service
from testbed.agents import aws_world, start_scheduler, wait_for

INSTANCES = 10
SLOTS = 2
POLICY = RolloutPolicy(str(SLOTS), steps=(RolloutStep("100%", 600),))


def run(runs: int, quick: bool) -> list[Figure]:
    times: list[float] = []
    ideals: list[float] = []
    deploys: list[float] = []
    with tempfile.TemporaryDirectory() as work, aws_world(f"revert{os.getpid()}") as world:
        fleet = Fleet(world, Path(work), "revert", size=INSTANCES, max_in_flight=str(SLOTS))
        store = world.store
        modify_service(store, fleet.service, lambda s: replace(s, rollout=POLICY))
        operations = Operations(store, fleet.events, world.clock)
        scheduler = start_scheduler(world, Path(work), "bench")
        with stopping(scheduler):
            try:
                fleet.start()
                good = fleet.new_revision()
                fleet.roll_to(good)  # a first deploy: no move, so no bake
                fleet.wait_until_all_run(good)
                wait_for(
                    lambda: store.get_service(fleet.service).rollout_state.previous_weights
                    is not None,
                    60, "the first rollout complete",
                )  # fmt: skip
                for _ in range(runs):
                    bad = fleet.new_revision()
                    fleet.roll_to(bad)
                    fleet.wait_until_all_run(bad, timeout=600)
                    wait_for(
                        lambda: store.get_service(fleet.service).rollout_state.baking_since
                        is not None,
                        60, "the rollout baking",
                    )  # fmt: skip
                    began = world.clock.now()
                    operations.revert(store.get_service(fleet.service), by="bench")
                    fleet.wait_until_all_run(good, timeout=600)
                    back = [d for d in fleet.deploys_to(good) if d.created_at >= began]
                    one = statistics.median(
                        seconds_between(d.created_at, d.updated_at) for d in back
                    )
                    times.append(seconds_between(began, max(d.updated_at for d in back)))
                    ideals.append(math.ceil(INSTANCES / SLOTS) * one)
                    deploys.append(one)
                    print("  revert: one run measured", file=sys.stderr)
            finally:
                fleet.stop()
    ratio = statistics.median(t / i for t, i in zip(times, ideals, strict=True))
    batches = math.ceil(INSTANCES / SLOTS)
    return [
        Figure("revert", f"fast revert of {INSTANCES} instances, max_in_flight {SLOTS}", "s",
               times, f"{ratio:.2f} × the ideal (median of the runs' ratios); the rollout's "
               "10-minute bake skipped",
               target=f"≤ {1.20 * statistics.median(ideals):.1f} s (1.20 × ideal)"),
        Figure("revert", f"  ideal: {batches} × one deploy", "s", ideals,
               f"one deploy: median {statistics.median(deploys):.2f} s"),
    ]  # fmt: skip
