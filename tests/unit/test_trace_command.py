"""`flotilla trace`'s own parsing, and a deploy caught mid-way (its open state drawn to now)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from flotilla.cli.trace import html, model, terminal
from flotilla.cli.trace_command import parse_since
from flotilla.engine.errors import ValidationError
from tests.support.trace_fixtures import CRASHED, RecordedRollout, record_rollout

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("6h", NOW - timedelta(hours=6)),
        ("2d", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2026-02-28T08:00:00Z", datetime(2026, 2, 28, 8, tzinfo=UTC)),
        ("2026-02-28T08:00:00", datetime(2026, 2, 28, 8, tzinfo=UTC)),
        ("2026-02-28T09:00:00+01:00", datetime(2026, 2, 28, 8, tzinfo=UTC)),
    ],
)
def test_since_takes_a_duration_or_an_iso_time(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


def test_a_bad_since_says_what_to_give() -> None:
    with pytest.raises(ValidationError, match="give a duration like 30m"):
        parse_since("yesterday", NOW)


@pytest.fixture(scope="module")
def recorded() -> RecordedRollout:
    return record_rollout()


def test_a_running_deploy_is_drawn_up_to_now(recorded: RecordedRollout) -> None:
    done = next(
        c for c in recorded.checkpoints if c.instance_id == CRASHED and c.to_revision == recorded.v2
    )
    cut = next(i for i, t in enumerate(done.history) if t.state == "healthy")
    open_visit = dataclasses.replace(done.history[cut], ended_at=None, span_id=None)
    running = dataclasses.replace(
        done, state="healthy", outcome=None, history=(*done.history[:cut], open_visit)
    )
    now = open_visit.started_at + timedelta(seconds=15)
    view = model.from_history([running], now=now, title="deploy")
    (row,) = view.rows
    assert row.outcome == model.RUNNING
    assert row.end(now) == now
    text = terminal.render(view, width=100)
    assert "RUNNING" in text
    assert "healthy 15s (now)" in text
    assert view.totals().p50 is None  # no finished deploy
    page = html.render(view)
    assert '"running"' in page
