"""The trace view shows each lifecycle hook's run in the state that ran it, from the deploy
history and from the agent's OTLP spans alike: result, exit status, duration, timeout;
never its output or a value of the revision's environment."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flotilla.cli.otlp_file import OtlpJsonFileExporter
from flotilla.cli.trace import html, model, terminal
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome
from flotilla.engine.records import Hook
from tests.support.cluster import Cluster

SECRET = "hooks-trace-secret-7e1"
LEAK = 'echo "token $TOKEN"\n'


def deploy_with_a_failing_validate(cluster: Cluster) -> DeployCheckpoint:
    v1 = cluster.revision("v1", hooks={"validate": Hook("exit 0\n", 30)})
    hooks = {
        "before-stop": Hook(LEAK, 30),
        "after-start": Hook(LEAK, 30),
        "validate": Hook(LEAK + "exit 7\n", 30),
    }
    v2 = cluster.revision("v2", env={"TOKEN": SECRET}, hooks=hooks)
    cluster.instance("i-1")
    cluster.assign("i-1", v1)
    cluster.deploy("i-1")
    cluster.assign("i-1", v2)
    done = cluster.store.get_deploy(cluster.deploy("i-1"))
    assert done.outcome is Outcome.ROLLED_BACK
    return done


def test_the_terminal_view_lists_the_hooks_of_a_deploy_in_their_states(cluster: Cluster) -> None:
    done = deploy_with_a_failing_validate(cluster)
    view = model.from_history([done], now=done.updated_at, title="api")

    text = terminal.render(view, width=200)

    [line] = [line for line in text.splitlines() if "hooks:" in line]
    assert "before-stop ok in " in line
    assert "(stopping)" in line
    assert "validate exit 7 after " in line
    assert "(healthy)" in line
    assert "validate ok in " in line  # the rollback's, of v1
    assert "(rolling_back)" in line
    assert SECRET not in text


def test_spans_give_the_same_hooks_as_the_history(
    cluster: Cluster, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    done = deploy_with_a_failing_validate(cluster)
    path = tmp_path / "spans.jsonl"
    exporter = OtlpJsonFileExporter(path)
    for span in spans.get_finished_spans():
        exporter.export([span])

    [from_spans] = [r for r in model.rows_from_otlp_text(path.read_text().splitlines())
                    if r.deploy_id == done.id]  # fmt: skip
    from_history = model.row_from_checkpoint(done)

    def runs(row: model.DeployRow) -> list[tuple[str, str, str, int | None, int]]:
        return [
            (s.state, h.hook, h.result, h.exit_status, h.timeout_seconds)
            for s in row.segments
            for h in s.hooks
        ]

    assert runs(from_spans) == runs(from_history)
    assert ("healthy", "validate", "exit-code", 7, 30) in runs(from_history)
    assert SECRET not in path.read_text()


def test_the_html_page_carries_each_hooks_run_and_no_secret(cluster: Cluster) -> None:
    done = deploy_with_a_failing_validate(cluster)
    view = model.from_history([done], now=done.updated_at, title="api")

    page = html.render(view)

    assert "validate exit 7 after " in page
    assert "before-stop ok in " in page
    assert SECRET not in page
