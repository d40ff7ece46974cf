"""The trace viewer in the terminal, on a recorded rollout: every instance, the crash and its
resume, the rollback's reason, the totals; colour only when wanted; no secret anywhere."""

from __future__ import annotations

import dataclasses
import io
import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.cli.trace import model, terminal
from flotilla.cli.trace.model import RolloutView
from flotilla.engine.records import HistoryEntry
from tests.support.trace_fixtures import (
    CRASHED,
    INSTANCES,
    ROLLED_BACK,
    SECRET,
    RecordedRollout,
    record_rollout,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def recorded() -> RecordedRollout:
    return record_rollout()


@pytest.fixture(scope="module")
def view(recorded: RecordedRollout) -> RolloutView:
    rows = [model.row_from_checkpoint(c) for c in recorded.checkpoints]
    now = max(c.updated_at for c in recorded.checkpoints)
    return model.view_of(
        model.select_rollout(rows, service="api"), now=now, title="rollout of api to v2"
    )


def row_line(text: str, instance: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(instance + " "))


def block_of(text: str, instance: str) -> str:
    """The row of `instance` and its detail lines."""
    lines = text.splitlines()
    start = lines.index(row_line(text, instance))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith(" "):
            break
        block.append(line)
    return "\n".join(block)


def test_the_header_says_the_outcome_and_the_totals(view: RolloutView) -> None:
    text = terminal.render(view, width=120)
    header = text.split("INSTANCE")[0]
    assert "rollout of api to v2: ROLLED BACK" in header
    assert "4 instances · 3 succeeded · 1 rolled back · 0 failed · 0 running" in header
    assert re.search(r"deploy time p50 \S+ · p95 \S+", header)
    assert "slowest state: healthy" in header
    assert f"on {ROLLED_BACK})" in header


def test_one_row_per_instance_with_its_outcome_and_time(view: RolloutView) -> None:
    text = terminal.render(view, width=120)
    for instance in INSTANCES:
        line = row_line(text, instance)
        outcome = "rolled back" if instance == ROLLED_BACK else "succeeded"
        assert f"  {outcome}" in line
        assert re.search(r"\|\s+\d+(\.\d)?[ms0-9]*s?$|\|\s+\S+$", line)
    widths = {len(row_line(text, i)) for i in INSTANCES}
    assert len(widths) == 1  # one shared time axis


def test_the_crash_gap_and_the_resume_are_visible(view: RolloutView) -> None:
    text = terminal.render(view, width=120)
    line = row_line(text, CRASHED)
    timeline = line.split("|")[1]
    assert re.search(r"~+↻", timeline), timeline
    block = block_of(text, CRASHED)
    assert "starting" in block
    assert "(attempt 2)" in block
    assert re.search(r"↻ agent stopped in starting at .*; resumed \d+s later \(attempt 2\)", block)
    for other in INSTANCES:
        if other != CRASHED:
            assert "↻" not in block_of(text, other)


def test_the_rollback_shows_its_reason(view: RolloutView) -> None:
    text = terminal.render(view, width=120)
    block = block_of(text, ROLLED_BACK)
    assert "✗ rolled back: healthy:" in " ".join(block.split())
    assert "health check" in block
    timeline = row_line(text, ROLLED_BACK).split("|")[1]
    assert "✗" in timeline
    assert "B" in timeline  # rolling_back drawn
    assert "rolling_back" in block


def test_durations_per_state(view: RolloutView) -> None:
    block = " ".join(block_of(terminal.render(view, width=200), "i-1").split())
    assert re.search(r"draining 3\ds", block)  # the load balancer's 30 s drain
    assert re.search(r"healthy 2\ds", block)


def test_without_colour_there_are_no_escapes_and_with_colour_the_same_text(
    view: RolloutView,
) -> None:
    plain = terminal.render(view, width=100, colour=False)
    coloured = terminal.render(view, width=100, colour=True)
    assert "\x1b[" not in plain
    assert "\x1b[" in coloured
    assert ANSI.sub("", coloured) == plain


def test_colour_follows_no_color_and_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert terminal.colour_wanted(Tty())
    assert not terminal.colour_wanted(io.StringIO())  # a pipe or a file
    monkeypatch.setenv("NO_COLOR", "1")
    assert not terminal.colour_wanted(Tty())
    assert terminal.colour_wanted(io.StringIO(), "always")
    assert not terminal.colour_wanted(Tty(), "never")


def test_a_narrow_terminal_still_gets_a_timeline(view: RolloutView) -> None:
    text = terminal.render(view, width=40)  # the narrowest --width
    assert len(row_line(text, "i-1").split("|")[1]) >= 12
    assert "TIME" not in text  # it gave way to the timeline
    assert max(len(line) for line in text.splitlines()) == 40


def events_view(view: RolloutView, instance_names: int = 0) -> RolloutView:
    """The view with the scheduler's events, labels, and instance names made longer."""
    rows = [
        dataclasses.replace(row, instance_id=row.instance_id + "x" * instance_names)
        for row in view.rows
    ]
    first = min(row.start for row in rows)
    last = max(row.end(view.now) for row in rows)
    history = [
        HistoryEntry(first - timedelta(seconds=3), "rollout_started", "weights changed", {}),
        HistoryEntry(last + timedelta(seconds=1), "rollout_stopped", "1 deploy failed " * 8, {}),
        HistoryEntry(last + timedelta(seconds=1), "reverted", "restored the last good", {}),
    ]
    labels = {row.to_revision: "v2" for row in rows}
    labels.update({row.from_revision: "v1" for row in rows if row.from_revision})
    return model.view_of(
        rows, now=view.now, title=view.title, labels=labels, events=model.events_of(history, rows)
    )


@settings(max_examples=60, deadline=None)
@given(width=st.integers(40, 260), names=st.integers(0, 40), colour=st.booleans())
def test_every_line_fits_the_width_exactly(
    view: RolloutView, width: int, names: int, colour: bool
) -> None:
    text = terminal.render(events_view(view, names), width=width, colour=colour)
    lines = [ANSI.sub("", line) for line in text.splitlines()]
    assert max(len(line) for line in lines) <= width, [t for t in lines if len(t) > width]
    rows = [line for line in lines if line.startswith("i-")]
    assert {len(line) for line in rows} == {width}  # the timeline takes what is left


def test_at_80_columns_nothing_is_drawn_past_80(view: RolloutView) -> None:
    text = terminal.render(view, width=80)
    assert max(len(line) for line in text.splitlines()) == 80  # it drew 81 before
    header = text.split("\n\n")[0].splitlines()
    legend = header[next(i for i, line in enumerate(header) if line.startswith("legend:")) :]
    assert len(legend) >= 3  # 188 characters once, now wrapped between its entries
    assert "p pending" in legend[0]
    entries = "  ".join(line.removeprefix("legend:").strip() for line in legend)
    assert "d draining  s stopping  t starting" in entries  # no entry cut in two


def test_the_scheduler_row_and_the_revisions(view: RolloutView) -> None:
    text = terminal.render(events_view(view), width=120)
    scheduler = next(line for line in text.splitlines() if line.startswith("SCHEDULER"))
    marks = scheduler.split("|")[1]
    assert marks.lstrip().startswith("S")  # the rollout started before any deploy
    assert "W" in marks
    assert marks.rstrip().endswith(("X", "R"))
    assert "wave 1: " in text
    assert "S legend" not in text
    assert "rollout started" in text  # the legend names the marks
    block = block_of(text, ROLLED_BACK)
    assert "v1 (" in block
    assert "→ v2 (" in block


def test_no_secret_in_the_text(view: RolloutView, recorded: RecordedRollout) -> None:
    assert SECRET not in terminal.render(view, width=120, colour=True)
    all_rows = [model.row_from_checkpoint(c) for c in recorded.checkpoints]
    everything = model.view_of(all_rows, now=view.now, title="all")
    assert SECRET not in terminal.render(everything, width=120)
    assert SECRET not in repr(everything)


def test_durations_read_like_a_person_wrote_them() -> None:
    from datetime import timedelta

    assert terminal.duration_text(timedelta(milliseconds=250)) == "250ms"
    assert terminal.duration_text(timedelta(seconds=3.04)) == "3.0s"
    assert terminal.duration_text(timedelta(seconds=42)) == "42s"
    assert terminal.duration_text(timedelta(seconds=62)) == "1m02s"
    assert terminal.duration_text(timedelta(hours=2, minutes=5)) == "2h05m"


def test_every_state_the_machine_can_stop_in_has_a_letter_a_background_and_a_colour() -> None:
    from flotilla.cli.trace import html, terminal
    from flotilla.machines import deploy as machine

    step_states = set(machine.STEP_STATES)
    assert set(terminal.LETTERS) == step_states
    assert set(terminal._BACKGROUNDS) == step_states
    assert set(html.COLOURS) == step_states
