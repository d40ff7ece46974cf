"""Real agent processes (and a real scheduler process) on a moto server, for the
benchmarks that time what a fleet does: restarts, rollouts, the scheduler's reaction.

Built on the testbed the integration tests use too (testbed/agents.py): the same
`flotilla agent` and `flotilla scheduler` commands, units on the process runtime. Times are read
from the checkpoints the agents write (their clock is this machine's clock), not from
this process's polling, so the polling adds no error to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from flotilla.adapters.sqs_events import queue_name
from flotilla.cli.wiring import process_runtime
from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.ports import Event
from flotilla.engine.records import RolloutPolicy, Service
from flotilla.engine.revisions import build_revision
from flotilla.engine.updates import set_weights
from testbed.agents import AgentProcess, AwsWorld, start_agent, wait_for

SLEEPER = "[Service]\nExecStart=/bin/sleep 600\n"


@dataclass
class Fleet:
    """One service of `size` instances, each with its agent process once `start()`ed."""

    world: AwsWorld
    work: Path
    service: str
    size: int
    max_in_flight: str = "1"
    # Agents with `flotilla agent`'s own settings (see testbed.agents.start_agent).
    cli_defaults: bool = True
    agents: list[AgentProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.world.store.create_service(
            Service(self.service, settle_seconds=1,
                    rollout=RolloutPolicy(self.max_in_flight, max_failures=1)),
        )  # fmt: skip
        self.instances = [f"i-{self.service}-{n:02d}" for n in range(self.size)]
        sqs = self.world.wiring.client("sqs")
        self.events = self.world.wiring.events
        self._sqs, self._labels = sqs, 0
        queue = sqs.get_queue_url(QueueName=queue_name(self.world.environment))
        self._queue_url = queue["QueueUrl"]

    def start(self) -> None:
        self.agents += [
            start_agent(self.world, self.work, self.service, i, cli_defaults=self.cli_defaults)
            for i in self.instances
        ]
        wait_for(
            lambda: len(self.world.store.list_instances(self.service)) == self.size,
            120, f"{self.size} agents of {self.service} registered",
        )  # fmt: skip

    def new_revision(self) -> str:
        self._labels += 1
        revision = build_revision(
            self.service, f"v{self._labels}", {"app.service": SLEEPER},
            {"app.service": {"TOKEN": f"bench-{self._labels}"}},
            self.world.secrets, self.world.clock.now(),
        )  # fmt: skip
        return self.world.store.put_revision(revision).id

    def roll_to(self, revision: str, *, wake: bool = True) -> datetime:
        """Give `revision` all the weight (the others none); send the scheduler the event
        `flotilla weights` sends, unless `wake` is False. Returns when it was written."""
        current = self.world.store.get_service(self.service).weights
        at = self.world.clock.now()
        set_weights(self.world.store, self.service, {**dict.fromkeys(current, 0), revision: 100})
        if wake:
            self.events.send(Event("service_changed", self.service))
        return at

    def deploys_to(self, revision: str) -> list[DeployCheckpoint]:
        return [
            deploy
            for instance in self.instances
            for deploy in self.world.store.list_instance_deploys(self.service, instance)
            if deploy.to_revision == revision
        ]

    def wait_until_all_run(self, revision: str, timeout: float = 300) -> list[DeployCheckpoint]:
        """Every instance runs `revision`; returns the deploys that got it there."""
        wait_for(
            lambda: all(
                i.current_revision == revision
                for i in self.world.store.list_instances(self.service)
            ),
            timeout, f"{revision[:8]} on every instance of {self.service}",
        )  # fmt: skip
        return self.deploys_to(revision)

    def wait_until_queue_is_empty(self, timeout: float = 60) -> None:
        """No event left for the scheduler (received or not), so a measurement that must
        not be helped by an event starts clean."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]

        def empty() -> bool:
            found = self._sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=names)
            return all(int(found["Attributes"][name]) == 0 for name in names)

        wait_for(empty, timeout, "the scheduler's queue to be empty")

    def stop(self) -> None:
        for agent in self.agents:
            agent.kill()
        for instance in self.instances:
            runtime = process_runtime(self.work / instance)  # the agent's --state-dir
            runtime.stop(runtime.owned_units())


@contextmanager
def stopping(*processes: AgentProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.kill()


def seconds_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()
