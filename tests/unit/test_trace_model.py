"""The trace viewer's model, from a recorded rollout: the deploy histories and the SDK's own
spans (written by the agent's OTLP file exporter) give the same rows."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from flotilla.cli.trace import model
from flotilla.cli.trace.model import DeployRow, RolloutView
from flotilla.engine.records import HistoryEntry
from tests.support.trace_fixtures import CRASHED, INSTANCES, ROLLED_BACK, RecordedRollout
from tests.support.trace_fixtures import record_rollout as record


@pytest.fixture(scope="module")
def recorded() -> RecordedRollout:
    return record()


@pytest.fixture(scope="module")
def view(recorded: RecordedRollout) -> RolloutView:
    rows = [model.row_from_checkpoint(c) for c in recorded.checkpoints]
    now = max(c.updated_at for c in recorded.checkpoints)
    chosen = model.select_rollout(rows, service="api")
    return model.view_of(chosen, now=now, title="rollout")


def by_instance(view: RolloutView) -> dict[str, DeployRow]:
    return {row.instance_id: row for row in view.rows}


def shape(row: DeployRow) -> tuple[object, ...]:
    """Everything but times (span times are real time, the checkpoints' a fake clock's)."""
    segments = tuple(
        dataclasses.replace(s, start=None, end=None, skipped=False)  # type: ignore[arg-type]
        for s in row.segments
    )
    return (row.deploy_id, row.instance_id, row.service, row.from_revision, row.to_revision,
            row.trace_id, row.outcome, row.error, row.rollback_error, segments)  # fmt: skip


def test_without_a_revision_the_latest_rollout_is_chosen(
    view: RolloutView, recorded: RecordedRollout
) -> None:
    assert sorted(by_instance(view)) == list(INSTANCES)
    assert {row.to_revision for row in view.rows} == {recorded.v2}
    assert {row.from_revision for row in view.rows} == {recorded.v1}
    rows = [model.row_from_checkpoint(c) for c in recorded.checkpoints]
    older = model.select_rollout(rows, service="api", revision=recorded.v1[:8])
    assert {row.to_revision for row in older} == {recorded.v1}
    assert model.select_rollout(rows, service="other") == []


def test_outcomes_totals_and_percentiles(view: RolloutView) -> None:
    rows = by_instance(view)
    assert rows[ROLLED_BACK].outcome == "rolled_back"
    assert all(rows[i].outcome == "succeeded" for i in INSTANCES if i != ROLLED_BACK)
    assert view.outcome == "rolled_back"
    totals = view.totals()
    assert totals.instances == 4
    assert totals.by_outcome == {"succeeded": 3, "rolled_back": 1, "failed": 0, "running": 0}
    durations = sorted(row.duration(view.now) for row in view.rows)
    assert totals.p50 == durations[1]  # nearest rank: the 2nd of 4
    assert totals.p95 == durations[-1]
    assert totals.slowest_state is not None
    assert totals.slowest_state.state == "healthy"  # the never-healthy instance waited 2 min
    assert totals.slowest_state.longest_instance == ROLLED_BACK


def test_the_crash_is_an_interrupted_visit_a_gap_and_a_resume(view: RolloutView) -> None:
    row = by_instance(view)[CRASHED]
    interrupted = [s for s in row.segments if s.interrupted]
    resumed = [s for s in row.segments if s.resumed]
    assert [(s.state, s.attempt) for s in interrupted] == [("starting", 1)]
    assert [(s.state, s.attempt) for s in resumed] == [("starting", 2)]
    (gap,) = row.gaps
    assert gap.state == "starting"
    assert gap.end - gap.start >= timedelta(seconds=40)
    assert row.resumes == 1
    assert row.outcome == "succeeded"


def test_the_rollback_carries_its_reason_and_failed_state(view: RolloutView) -> None:
    row = by_instance(view)[ROLLED_BACK]
    assert row.failed_state == "healthy"
    assert row.reason is not None
    assert row.reason.startswith("healthy: ")
    assert "health check" in row.reason
    assert [s.state for s in row.segments][-3:] == ["failed", "rolling_back", "unlocked"]


def test_every_visit_names_its_span(view: RolloutView) -> None:
    for row in view.rows:
        assert row.trace_id is not None
        assert len(row.trace_id) == 32
        for segment in row.segments:
            assert segment.interrupted or (segment.span_id and len(segment.span_id) == 16)


def test_otlp_spans_give_the_same_rows_as_the_history(
    view: RolloutView, recorded: RecordedRollout, tmp_path: Path
) -> None:
    path = recorded.write_otlp(tmp_path / "spans.jsonl")
    from_spans = model.from_otlp(path.read_text().splitlines(), now=view.now, title="spans")
    chosen = model.select_rollout(from_spans.rows, service="api")
    assert sorted(shape(r) for r in chosen) == sorted(shape(r) for r in view.rows)
    # Times agree in order: each visit starts no earlier than the one before it ended.
    for row in chosen:
        for before, after in zip(row.segments, row.segments[1:], strict=False):
            assert before.end is not None
            assert after.start >= before.end - timedelta(milliseconds=5)


def test_otlp_accepts_one_pretty_document_and_base64_ids(
    recorded: RecordedRollout, tmp_path: Path
) -> None:
    import base64
    import json

    lines = recorded.write_otlp(tmp_path / "spans.jsonl").read_text().splitlines()
    spans = []
    for line in lines:
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                spans += scope["spans"]
    for span in spans:  # protobuf's own JSON mapping, as some tools write it
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in span:
                span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
        if span.get("status", {}).get("code") == "STATUS_CODE_ERROR":
            span["status"]["code"] = 2  # the collector writes enums as numbers
    document = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    text = json.dumps(document, indent=2).splitlines()
    rows = model.select_rollout(model.rows_from_otlp_text(text), service="api")
    direct = model.select_rollout(model.rows_from_otlp_text(lines), service="api")
    assert sorted(shape(r) for r in rows) == sorted(shape(r) for r in direct)


def test_not_json_is_one_clear_error(tmp_path: Path) -> None:
    from flotilla.engine.errors import ValidationError

    with pytest.raises(ValidationError, match="not JSON"):
        model.rows_from_otlp_text(["{not json"])


def test_an_empty_view_has_no_outcome() -> None:
    from datetime import UTC, datetime

    empty = model.view_of([], now=datetime(2026, 1, 1, tzinfo=UTC), title="nothing")
    assert empty.outcome == "empty"
    assert empty.totals().p50 is None


def test_the_schedulers_events_of_a_rollout(view: RolloutView) -> None:
    rows = list(view.rows)
    first = min(r.start for r in rows)
    last = max(r.end(r.start) for r in rows)
    second = timedelta(seconds=1)
    history = [
        HistoryEntry(first - 100 * second, "rollout_started", "an earlier rollout", {}),
        HistoryEntry(first - 90 * second, "rollout_complete", "it completed", {}),
        HistoryEntry(first - 5 * second, "rollout_started", "weights changed", {}),
        HistoryEntry(first + 10 * second, "paused", "paused by alice", {}),
        HistoryEntry(last + second, "rollout_stopped", "1 deploy failed", {}),
        HistoryEntry(last + second, "reverted", "restored", {}),
        HistoryEntry(last + 30 * second, "rollout_complete", "the revert completed", {}),
    ]
    events = model.events_of(history, rows)
    kinds = [e.kind for e in events if e.kind != model.WAVE]
    # From the change that began it to the entry that ended it; nothing before or after.
    assert kinds == ["rollout_started", "paused", "rollout_stopped", "reverted"]
    waves = [e for e in events if e.kind == model.WAVE]
    assert waves[0].text.startswith("wave 1: ")
    assert sum(int(w.text.split(": ")[1].split()[0]) for w in waves) == len(rows)
    shown = model.view_of(rows, now=view.now, title="t", events=events, labels={"x": "v9"})
    assert shown.start == first - 5 * second  # the axis begins where the rollout did
    assert shown.revision_text("x" * 64) == "xxxxxxxxxxxx"
    assert shown.revision_text("x") == "v9 (x)"


def test_deploys_that_begin_together_are_one_wave(view: RolloutView) -> None:
    base = view.rows[0]
    together = [
        replace(base, instance_id=f"i-{n}", segments=tuple(
            replace(s, start=s.start + timedelta(milliseconds=300 * n)) for s in base.segments
        ))
        for n in range(3)
    ]  # fmt: skip
    assert [w.text for w in model.waves(together)] == ["wave 1: 3 deploys began (i-0, i-1, i-2)"]
