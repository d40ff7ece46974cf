"""A recorded rollout for the trace viewer's tests: the real engine on memory adapters and a
fake clock, four instances moving from v1 to v2, one of them crash-resumed in `starting`
and one rolled back after failing its health check. A secret sits in v2's environment.

The spans are the SDK's own (recorded while the engine ran), so the OTLP file written
from them by `cli.otlp_file` is what an agent writes. Span times are real time, the
checkpoints' the fake clock's: compare the two sources on everything but times.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flotilla.cli.otlp_file import OtlpJsonFileExporter
from flotilla.engine.checkpoint import DeployCheckpoint
from flotilla.engine.records import deploy_id_for
from tests.support.cluster import Cluster

SECRET = "pa55-hunter2-trace-secret"
INSTANCES = ("i-1", "i-2", "i-3", "i-4")
CRASHED = "i-2"  # killed in `starting` after its effect, resumed 40 s later
ROLLED_BACK = "i-3"  # never healthy; the rollback restores v1


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


@dataclass(frozen=True)
class RecordedRollout:
    service: str
    v1: str
    v2: str
    checkpoints: tuple[DeployCheckpoint, ...]  # every deploy of the service, v1 and v2
    spans: tuple[ReadableSpan, ...]

    def write_otlp(self, path: Path) -> Path:
        """The spans as an agent's `--trace-file` holds them (one export per span)."""
        exporter = OtlpJsonFileExporter(path)
        for span in self.spans:
            exporter.export([span])
        return path


@functools.cache  # recorded once per test session
def record_rollout() -> RecordedRollout:
    recorder = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    # The tests' provider (tests/conftest.py): without it no span is recorded, and the
    # span-based tests would compare empty lists.
    assert isinstance(provider, TracerProvider), "tests/conftest.py installs the SDK provider"
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    with tempfile.TemporaryDirectory() as root:
        cluster = Cluster(Path(root))
        try:
            checkpoints = _run(cluster)
        finally:
            cluster.shutdown()
    trace_ids = {c.trace_parent.split("-")[1] for c in checkpoints[2] if c.trace_parent}
    spans = tuple(
        s
        for s in recorder.get_finished_spans()
        if s.context is not None and format(s.context.trace_id, "032x") in trace_ids
    )
    recorder.shutdown()  # stays registered, records nothing more
    v1, v2, recorded = checkpoints
    return RecordedRollout("api", v1, v2, recorded, spans)


def _run(cluster: Cluster) -> tuple[str, str, tuple[DeployCheckpoint, ...]]:
    v1 = cluster.revision("v1")
    v2 = cluster.revision("v2", env={"DB_PASSWORD": SECRET, "PORT": "8080"})
    for instance_id in INSTANCES:
        cluster.instance(instance_id)
        cluster.assign(instance_id, v1)
        cluster.deploy(instance_id)
    cluster.clock.advance(600)
    for instance_id in INSTANCES:
        cluster.assign(instance_id, v2)
        if instance_id == CRASHED:
            _crash_and_resume(cluster, instance_id)
        elif instance_id == ROLLED_BACK:
            cluster.lb.never_healthy(instance_id)

            def heal(point: str, state: str, instance: str = instance_id) -> None:
                if (point, state) == ("before-step", "rolling_back"):
                    cluster.lb.heal(instance)

            cluster.deploy(instance_id, fault=heal)
        else:
            cluster.deploy(instance_id)
        cluster.clock.advance(2)
    deploys = tuple(cluster.store.list_deploys("api"))
    return v1.id, v2.id, deploys


def _crash_and_resume(cluster: Cluster, instance_id: str) -> None:
    def crash(point: str, state: str) -> None:
        if (point, state) == ("after-effect", "starting"):
            raise Crash

    with contextlib.suppress(Crash):
        cluster.deploy(instance_id, fault=crash)
    cluster.clock.advance(40)  # the agent is down, then systemd restarts it
    instance = cluster.store.get_instance("api", instance_id)
    deploy_id = deploy_id_for(instance)
    cluster.runner(instance_id).run(deploy_id, cluster.service)
