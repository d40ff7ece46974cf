"""What the demo shows, step by step: a canary rollout, an agent killed mid-deploy that
comes back and finishes, a broken revision reverted on its own, and the trace of it all.

The demo drives Flotilla only through its command line and its daemons, as an operator
would; it reads the store directly only to know when to go on.
"""

from __future__ import annotations

import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from flotilla.cli.demo.event_feed import EventFeed
from flotilla.cli.demo.fleet import DemoError, Fleet
from flotilla.cli.demo.summary import InstanceSummary, summarise
from flotilla.engine.ports import StateStore
from flotilla.engine.records import RolloutStatus

UNIT = """\
[Unit]
Description=Flotilla demo web server, {label}

[Service]
ExecStart={python} -m flotilla.cli.demo.web_server
# Where the server says its port on systemd (web_server.py); the process runtime ignores it.
RuntimeDirectory=%N
"""
BROKEN_UNIT = """\
[Unit]
Description=Flotilla demo web server, {label} (it crashes at start)

[Service]
ExecStart=/bin/sh -c 'echo "missing configuration" >&2; exit 3'
"""
ROLLOUT_TIMEOUT = 180.0  # seconds; a rollout of the demo takes a few
# How to read the lines that follow a rollout, said once before the first of them.
PICTURE_KEY = (
    "    (each line: every instance and the revision it runs, '-' for none; '*' marks an "
    "instance assigned another revision that it has not deployed yet)"
)


class Story:
    def __init__(
        self,
        fleet: Fleet,
        store: StateStore,
        instances: int,
        say: Callable[[str], None],
        feed: EventFeed | None = None,
    ) -> None:
        self.fleet = fleet
        self.feed = feed  # what a subscriber to the events topic receives, printed
        self.store = store
        self.instance_ids = [f"demo-{n}" for n in range(1, instances + 1)]
        self.say = say
        self.service = fleet.service
        # A value that must never appear anywhere but the units' 0600 environment files.
        self.secret = f"demo-secret-{secrets.token_hex(8)}"
        self.summary: list[InstanceSummary] = []
        self.key_shown = False

    def chapter(self, title: str) -> None:
        self.say("")
        self.say(f"==> {title}")

    # --- the steps ---------------------------------------------------------------------

    def run(self, html: Path) -> None:
        fleet = self.fleet
        self.chapter(
            "Create the environment (tables, queue, KMS key) and start two schedulers "
            "(one leads, one stands by)"
        )
        # The demo's schedulers are local processes, not instances: none to install.
        fleet.cli("init", "--scheduler-count", "0", show=False)
        self.say("    environment 'demo' created")
        if self.feed is not None:
            fleet.events_topic = self.feed.open()
            self.say(
                f"    an SQS queue subscribes to the events topic {fleet.events_topic}, as "
                "another system would; what it receives is printed as [event] lines"
            )
        # The daemons start while the service and v1 are added: their start-up (Python and
        # boto3 imports, seconds on a busy machine) overlaps the CLI calls.
        fleet.start_scheduler("scheduler-a")
        fleet.start_scheduler("scheduler-b")

        self.chapter(
            f"Create a service, start {len(self.instance_ids)} agents (one per simulated "
            "instance), and roll out v1"
        )
        fleet.cli(
            "service", "create", self.service,
            "--max-in-flight", "1", "--max-failures", "1", "--auto-revert", "--settle", "1",
        )  # fmt: skip
        for instance_id in self.instance_ids:
            fleet.start_agent(instance_id)
        self.say(f"    logs in {fleet.work / 'logs'}")
        self.add_revision("v1", UNIT)
        fleet.cli("weights", self.service, "v1=100")
        self.wait_for_rollout("v1 everywhere")
        fleet.cli("rollout", "status", self.service)

        self.chapter("Canary: v2 at weight 25")
        self.add_revision("v2", UNIT)
        fleet.cli("weights", self.service, "v1=75", "v2=25")
        self.wait_for_rollout("the canary")

        self.chapter("Roll v2 out everywhere, and kill an agent in the middle of its deploy")
        victim = self.instance_running("v1")
        self.say(
            f"    restarting {victim}'s agent with a fault hook that SIGKILLs it in state "
            "'starting', after its units started but before the checkpoint is written"
        )
        fleet.daemons[victim].stop()
        doomed = fleet.start_agent(victim, kill_at="starting:after-effect")
        fleet.cli("weights", self.service, "v1=0", "v2=100")
        self.wait_until(lambda: not doomed.running, f"{victim}'s agent to be killed")
        if doomed.process.returncode != -signal.SIGKILL:
            raise DemoError(f"{victim}'s agent exited {doomed.process.returncode}, not SIGKILL")
        stuck = self.unfinished_deploy(victim)
        state = self.store.get_deploy(stuck).state
        self.say(
            f"    killed: deploy {stuck} is checkpointed in state '{state}'; "
            "its lock slot and its units are left as they were"
        )
        self.say("    restarting the agent, as systemd's Restart=always would")
        fleet.start_agent(victim)
        self.wait_until(lambda: self.store.get_deploy(stuck).finished, "the resumed deploy")
        resumed = self.store.get_deploy(stuck)
        resumed_at = [t.state for t in resumed.history if t.resumed]
        self.say(f"    resumed at {', '.join(resumed_at)}; outcome: {resumed.outcome}")
        self.wait_for_rollout("v2 everywhere")
        fleet.cli("rollout", "status", self.service)

        self.chapter("A broken revision: its first deploy fails, the rollout stops and reverts")
        self.add_revision("v3-broken", BROKEN_UNIT)
        fleet.cli("weights", self.service, "v2=0", "v3-broken=100")
        self.wait_until(self.reverted, "the automatic revert")
        self.wait_for_rollout("v2 everywhere again")
        fleet.cli("history", self.service, "--limit", "6")
        self.settle_events()

        self.chapter("Every instance, and what its web server answers")
        self.summary = summarise(
            self.store,
            self.service,
            self.instance_ids,
            fleet.announcement,
        )
        for row in self.summary:
            self.say(
                f"    {row.instance}: runs {row.revision}, last deploy {row.outcome} in "
                f"{row.deploy_seconds}s{', resumed after a crash' if row.resumed else ''}; "
                f"GET / -> {row.http!r}"
            )

        self.chapter("The trace of the v2 rollout: every instance, every state")
        colour = ["--color", "always"] if fleet.colour else ["--color", "never"]
        fleet.cli("trace", "rollout", self.service, "--revision", "v2", *colour)
        fleet.cli("trace", "rollout", self.service, "--revision", "v2", "--html", str(html))

    # --- helpers -----------------------------------------------------------------------

    def add_revision(self, label: str, unit: str) -> None:
        source = self.fleet.work / "revisions" / label
        source.mkdir(parents=True, exist_ok=True)
        (source / "web.service").write_text(unit.format(label=label, python=sys.executable))
        env = source / "web.env"
        env.touch(mode=0o600)
        env.write_text(f"GREETING=hello from {label}\nAPI_TOKEN={self.secret}\n")
        self.fleet.cli("revision", "add", self.service, str(source), "--label", label)

    def revision_id(self, label: str) -> str:
        return next(r.id for r in self.store.list_revisions(self.service) if r.label == label)

    def instance_running(self, label: str) -> str:
        wanted = self.revision_id(label)
        for instance in self.store.list_instances(self.service):
            if instance.current_revision == wanted:
                return instance.id
        raise DemoError(f"no instance runs {label}")

    def unfinished_deploy(self, instance_id: str) -> str:
        for deploy in self.store.list_instance_deploys(self.service, instance_id):
            if not deploy.finished:
                return deploy.id
        raise DemoError(f"{instance_id} has no unfinished deploy")

    def reverted(self) -> bool:
        service = self.store.get_service(self.service)
        return any(entry.kind == "reverted" for entry in service.history)

    def wait_for_rollout(self, what: str) -> None:
        """Until every instance runs its assignment and the rollout is recorded complete,
        printing a line whenever the picture changes (`PICTURE_KEY` says how to read it,
        before the first)."""
        labels = {r.id: r.label for r in self.store.list_revisions(self.service)}
        shown = ""
        if not self.key_shown:
            self.say(PICTURE_KEY)
            self.key_shown = True

        def settled() -> bool:
            nonlocal shown
            service = self.store.get_service(self.service)
            instances = self.store.list_instances(self.service)
            running = [
                deploy
                for instance in instances
                for deploy in self.store.list_instance_deploys(self.service, instance.id)[-1:]
                if not deploy.finished
            ]
            picture = "  ".join(
                f"{i.id}={labels.get(i.current_revision or '', '-')}"
                + ("*" if i.assigned_revision != i.current_revision else "")
                for i in instances
            )
            moving = ", ".join(f"{d.instance_id} {d.state}" for d in running)
            line = f"    {picture}" + (f"   deploying: {moving}" if moving else "")
            if line != shown:
                self.say(line)
                shown = line
            return (
                len(instances) == len(self.instance_ids)
                and all(i.assigned_revision == i.current_revision for i in instances)
                and service.rollout_state.status is RolloutStatus.COMPLETE
                and service.rollout_state.weights == service.weights
                and not running
            )

        self.wait_until(settled, what)

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + ROLLOUT_TIMEOUT
        while not condition():
            self.show_events()
            self.fleet.check_alive()
            if time.monotonic() > deadline:
                raise DemoError(
                    f"gave up after {ROLLOUT_TIMEOUT:.0f} s waiting for {what}; "
                    f"see the logs in {self.fleet.work / 'logs'}"
                )
            time.sleep(0.5)
        self.show_events()

    def show_events(self) -> None:
        if self.feed is not None:
            self.feed.show()

    def settle_events(self, quiet: float = 1.5, longest: float = 10.0) -> None:
        """Print events until none has come for `quiet` seconds: the scheduler publishes
        a rollout's last events just after it stores them."""
        if self.feed is None:
            return
        last = began = time.monotonic()
        while time.monotonic() - last < quiet and time.monotonic() - began < longest:
            if self.feed.show():
                last = time.monotonic()
            time.sleep(0.3)
