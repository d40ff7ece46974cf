"""The reaction to a weight change: from the write to the first agent starting its deploy
(creating the deploy's checkpoint), with the scheduler's SQS wake-up and by polling only.

One real scheduler process with the default `--interval 15` and two real agent processes
with `flotilla agent`'s defaults (a safety-net poll every 60 s: they learn of their new
assignment from their wake-up queue, which the scheduler rings) on a moto server. The two
kinds of run differ only in the scheduler's event: both write the new weights to the store
the way `flotilla weights` does, and "SQS wake-up" then sends the `service_changed` event it
sends, while "polling only" sends none, so only the scheduler's next timed pass sees the
change. Before each run the queue is empty (the last rollout's `deploy_finished` events are
handled), so no other event helps.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from benchlib.figures import Figure
from benchlib.fleet import Fleet, seconds_between, stopping
from testbed.agents import aws_world, start_scheduler, wait_for

INTERVAL = 15  # seconds: `flotilla scheduler`'s default
KINDS = {"SQS wake-up": True, "polling only": False}


def run(runs: int, quick: bool) -> list[Figure]:
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as work, aws_world(f"react{os.getpid()}") as world:
        fleet = Fleet(world, Path(work), "react", size=2, max_in_flight="2")
        scheduler = start_scheduler(world, Path(work), "bench", interval=INTERVAL)
        with stopping(scheduler):
            try:
                fleet.start()
                first = fleet.new_revision()
                fleet.roll_to(first)
                fleet.wait_until_all_run(first)
                for _ in range(runs):
                    for kind, wake in KINDS.items():
                        fleet.wait_until_queue_is_empty()
                        revision = fleet.new_revision()
                        began = fleet.roll_to(revision, wake=wake)
                        wait_for(lambda r=revision: bool(fleet.deploys_to(r)), INTERVAL * 3,
                                 f"a deploy after the weight change ({kind})")  # fmt: skip
                        done = fleet.wait_until_all_run(revision)
                        started = min(d.created_at for d in done)
                        samples[kind].append(seconds_between(began, started))
                    print(f"  reaction: run {len(samples['SQS wake-up'])}", file=sys.stderr)
            finally:
                fleet.stop()
    return [
        Figure("reaction", "weight change to first deploy started, SQS wake-up", "s",
               samples["SQS wake-up"], f"scheduler --interval {INTERVAL}, agents woken by SQS",
               target="≤ 2 s"),
        Figure("reaction", "weight change to first deploy started, polling only", "s",
               samples["polling only"], f"no event: up to the interval ({INTERVAL} s)"),
    ]  # fmt: skip
