"""Time from an agent's restart to its resumed deploy's next step.

A real agent process is SIGKILLed by its fault hook just before the `starting` step of a
deploy (on the process runtime, against a moto server); a new agent process is started
at once, as systemd restarts it; the figure is the time from that start to the
`starting` visit the new agent records as resumed. It includes the process's own start
(Python, imports, AWS clients) and its taking over the instance. The agents run with
`flotilla agent`'s defaults, a 9-minute hold on the instance: the new agent does not wait
that out, it proves the killed one dead (same machine and boot, its pid gone) and takes
the instance at once. The agent's log tells the parts apart.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib.figures import Figure
from benchlib.fleet import Fleet, seconds_between, stopping
from flotilla.engine.liveness import expiry_for
from flotilla.engine.records import Instance
from testbed.agents import aws_world, start_agent, wait_for

KILLED_AT = "starting"
AGENT_LEASE = "the default 540"  # seconds: `flotilla agent`'s hold on its instance


def logged_at(lines: list[dict[str, Any]], starting: str = "") -> datetime:
    """When the first line whose message starts with `starting` was logged."""
    line = next(li for li in lines if str(li.get("message", "")).startswith(starting))
    return datetime.fromisoformat(line["time"])


def run(runs: int, quick: bool) -> list[Figure]:
    samples: dict[str, list[float]] = {"total": [], "start": [], "lease": []}
    with tempfile.TemporaryDirectory() as work, aws_world(f"restart{os.getpid()}") as world:
        fleet = Fleet(world, Path(work), "restart", size=1)
        (instance,) = fleet.instances
        try:
            now = world.clock.now()
            world.store.register_instance(
                Instance(instance, fleet.service, "bench", now, now), expires_at=expiry_for(now)
            )
            for _ in range(runs):
                revision = fleet.new_revision()
                current = world.store.get_instance(fleet.service, instance)
                world.store.set_assignment(
                    fleet.service, instance, revision, expected_version=current.assignment_version
                )
                doomed = start_agent(
                    world,
                    Path(work),
                    fleet.service,
                    instance,
                    fault=f"{KILLED_AT}:before-step",
                    cli_defaults=True,
                )
                if doomed.process.wait(timeout=120) != -9:
                    raise RuntimeError("the fault hook did not kill the agent")
                restarted_at = world.clock.now()
                survivor = start_agent(world, Path(work), fleet.service, instance,
                                       cli_defaults=True)  # fmt: skip
                with stopping(survivor):
                    (deploy,) = fleet.deploys_to(revision)
                    wait_for(lambda d=deploy: world.store.get_deploy(d.id).finished, 120,
                             "the resumed deploy")  # fmt: skip
                    done = world.store.get_deploy(deploy.id)
                    resumed = next(t for t in done.history if t.resumed)
                    survivor.terminate()
                    lines = survivor.log_lines()
                    registered = logged_at(lines, "registered instance")
                    samples["total"].append(seconds_between(restarted_at, resumed.started_at))
                    samples["start"].append(seconds_between(restarted_at, logged_at(lines)))
                    samples["lease"].append(seconds_between(logged_at(lines), registered))
        finally:
            fleet.stop()
    return [
        Figure("restart", f"agent restart to resumed step (killed before `{KILLED_AT}`)", "s",
               samples["total"], f"real agent process, moto server, agent lease {AGENT_LEASE} s",
               target="≤ 1 s"),
        Figure("restart", "  of which: process start to its first log line", "s",
               samples["start"], "Python, imports, AWS clients"),
        Figure("restart", "  of which: taking the instance over from the killed agent", "s",
               samples["lease"], "proven dead: no wait for its hold to run out"),
    ]  # fmt: skip
