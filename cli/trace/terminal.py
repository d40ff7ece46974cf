"""The rollout view as text: a header with totals, then one timeline row per instance.

Every row shares one time axis. Each cell shows the state that fills most of it, as a
letter (see LEGEND) on that state's colour; `~` is a crash gap (no agent was working),
`↻` the resume, `✗` the step that failed. Under each row: the revisions it moved between,
the time spent per state, the crash and resume, and the reason a deploy did not succeed.
A first row, SCHEDULER, marks what the scheduler did (`EVENT_MARKS`: the rollout started,
each wave of deploys, each step reached, held, promoted, stopped, reverted, complete),
each spelled out under it. Without
colour (`NO_COLOR`, or output that is not a terminal) the letters say the same.

Every line fits in `width` columns exactly (colour codes take none): long lines wrap, the
legend wraps between its entries, and on a narrow terminal instance names are shortened
and then the TIME column is left out before the timeline gets too short to read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from textwrap import wrap
from typing import IO

from flotilla.cli.trace.model import RUNNING, WAVE, DeployRow, RolloutView, Segment, hook_text
from flotilla.machines.deploy import State

LETTERS: Mapping[str, str] = {
    State.PENDING: "p",
    State.LOCKING: "l",
    State.DEREGISTERING: "x",
    State.DRAINING: "d",
    State.STOPPING: "s",
    State.STARTING: "t",
    State.REGISTERING: "g",
    State.HEALTHY: "h",
    State.UNLOCKED: "u",
    State.FAILED: "F",
    State.ROLLING_BACK: "B",
}
# Background colours (SGR), black letters on them.
_BACKGROUNDS: Mapping[str, int] = {
    State.PENDING: 47,
    State.LOCKING: 44,
    State.DEREGISTERING: 46,
    State.DRAINING: 106,
    State.STOPPING: 43,
    State.STARTING: 103,
    State.REGISTERING: 45,
    State.HEALTHY: 42,
    State.UNLOCKED: 102,
    State.FAILED: 41,
    State.ROLLING_BACK: 105,
}
_OUTCOME_COLOURS: Mapping[str, int] = {
    "succeeded": 32,
    "rolled_back": 33,
    "failed": 31,
    RUNNING: 36,
}
GAP, RESUME, FAILED_MARK, EMPTY = "~", "↻", "✗", " "
# The scheduler's row: one letter per kind of event.
EVENT_MARKS: Mapping[str, str] = {
    "rollout_started": "S",
    WAVE: "W",
    "rollout_stopped": "X",
    "reverted": "R",
    "undone": "U",
    "paused": "P",
    "resumed": "r",
    "rollout_complete": "C",
    "step_reached": "T",
    "held": "H",
    "promoted": "+",
}
SCHEDULER = "SCHEDULER"
_RESET = "\x1b[0m"
_MIN_TIMELINE = 12  # below this the timeline says nothing; other columns give way first
_MIN_LABEL = len("INSTANCE")
_OUTCOME_WIDTH = len("rolled back")
_TIME_WIDTH = 7


def colour_wanted(stream: IO[str], choice: str = "auto") -> bool:
    """`always`, `never`, or `auto`: colour on a terminal unless NO_COLOR is set (no-color.org)."""
    if choice in ("always", "never"):
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def render(view: RolloutView, *, width: int = 100, colour: bool = False) -> str:
    lines = _header(view, colour, width)
    if not view.rows:
        return "\n".join([*lines, "", "no deploys found"]) + "\n"
    per_instance: dict[str, int] = {}
    for row in view.rows:
        per_instance[row.instance_id] = per_instance.get(row.instance_id, 0) + 1
    labels = [_label(row, per_instance) for row in view.rows]
    widest = max(len("INSTANCE"), len(SCHEDULER) if view.events else 0, *map(len, labels))
    label_width, time_width, timeline_width = _columns(width, widest)
    start, end = view.start, view.end
    total = max((end - start).total_seconds(), 1e-6)
    scale = total / timeline_width
    heading = f"{_fit('INSTANCE', label_width)}  {'OUTCOME':<{_OUTCOME_WIDTH}}"
    time_heading = f"  {'TIME':>{time_width}}" if time_width else ""
    lines += ["", f"{heading}  |{_axis(end - start, timeline_width)}|{time_heading}"]
    indent = " " * min(label_width + 2, max(width // 3, 4))
    if view.events:
        marks = _event_cells(view, start, scale, timeline_width)
        blank = " " * _OUTCOME_WIDTH
        lines.append(f"{_fit(SCHEDULER, label_width)}  {blank}  |{marks}|")
        for event in view.events:
            text = f"{EVENT_MARKS.get(event.kind, '?')} {time_text(event.at)[11:19]} {event.text}"
            lines += _wrapped(text, width, indent)
    for row, label in zip(view.rows, labels, strict=True):
        cells = _cells(row, view.now, start, scale, timeline_width)
        timeline = _paint(cells, colour)
        outcome = _outcome_text(row.outcome, colour, _OUTCOME_WIDTH)
        took = f"  {duration_text(row.duration(view.now)):>{time_width}}" if time_width else ""
        lines.append(f"{_fit(label, label_width)}  {outcome}  |{timeline}|{took}")
        for detail in _details(row, view):
            lines += _wrapped(detail, width, indent)
    return "\n".join(lines) + "\n"


def _columns(width: int, widest_label: int) -> tuple[int, int, int]:
    """(label, time, timeline) widths whose row is exactly `width` columns: instance names
    give way first (down to `_MIN_LABEL`), then the TIME column (each row's details say
    how long every state took), so that the timeline keeps `_MIN_TIMELINE` columns."""
    # label + "  " + outcome + "  |" + timeline + "|" + "  " + time
    fixed = _OUTCOME_WIDTH + 6
    label = widest_label
    time = _TIME_WIDTH
    if width - fixed - label - (time + 2) < _MIN_TIMELINE:
        label = max(_MIN_LABEL, width - fixed - (time + 2) - _MIN_TIMELINE)
    if width - fixed - label - (time + 2) < _MIN_TIMELINE:
        time = 0
    timeline = width - fixed - label - (time + 2 if time else 0)
    return label, time, max(timeline, 1)


def _fit(text: str, width: int) -> str:
    """`text` in exactly `width` columns: padded, or cut with an ellipsis."""
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


def _axis(span: timedelta, width: int) -> str:
    left, right = "0s", duration_text(span)
    if width < len(left) + len(right) + 1:
        return (right if len(right) <= width else "").rjust(width)
    return left + " " * (width - len(left) - len(right)) + right


def _wrapped(text: str, width: int, indent: str) -> list[str]:
    return wrap(text, width=width, initial_indent=indent, subsequent_indent=indent + "  ") or [
        indent.rstrip()
    ]


def _event_cells(view: RolloutView, start: datetime, scale: float, width: int) -> str:
    cells = [EMPTY] * width
    for event in view.events:
        index = min(max(round((event.at - start).total_seconds() / scale), 0), width - 1)
        mark = EVENT_MARKS.get(event.kind, "?")
        # In a shared cell a wave gives way to anything else; otherwise the later wins.
        if mark != EVENT_MARKS[WAVE] or cells[index] == EMPTY:
            cells[index] = mark
    return "".join(cells)


def _label(row: DeployRow, per_instance: Mapping[str, int]) -> str:
    """The instance, or instance and deploy id when an instance has several deploys here."""
    if per_instance[row.instance_id] == 1:
        return row.instance_id
    return f"{row.instance_id} ({row.deploy_id})"


def _header(view: RolloutView, colour: bool, width: int) -> list[str]:
    totals = view.totals()
    counts = totals.by_outcome
    outcome = view.outcome.replace("_", " ").upper()
    title = f"{view.title}: {outcome}"
    lines = wrap(title, width=width, subsequent_indent="  ")
    if colour and view.outcome in _OUTCOME_COLOURS:  # the outcome ends the title's last line
        painted = f"\x1b[1;{_OUTCOME_COLOURS[view.outcome]}m{outcome}{_RESET}"
        lines[-1] = lines[-1][: -len(outcome)] + painted
    facts = [
        f"{totals.instances} instances · {counts['succeeded']} succeeded · "
        f"{counts['rolled_back']} rolled back · {counts['failed']} failed · "
        f"{counts[RUNNING]} running"
        + (f" · {totals.deploys} deploys" if totals.deploys != totals.instances else "")
    ]
    if totals.p50 is not None and totals.p95 is not None:
        facts.append(
            f"deploy time p50 {duration_text(totals.p50)} · p95 {duration_text(totals.p95)}"
        )
    slowest = totals.slowest_state
    if slowest is not None:
        facts.append(
            f"slowest state: {slowest.state} ({duration_text(slowest.total)} in all, longest "
            f"{duration_text(slowest.longest)} on {slowest.longest_instance})"
        )
    if view.rows:
        facts.append(
            f"from {time_text(view.start)} to {time_text(view.end)} "
            f"({duration_text(view.end - view.start)})"
        )
    for fact in facts:
        lines += wrap(fact, width=width, subsequent_indent="  ")
    entries = [f"{letter} {state}" for state, letter in LETTERS.items()]
    entries += [f"{GAP} crash gap", f"{RESUME} resumed", f"{FAILED_MARK} failed step"]
    if view.events:
        entries += [f"{mark} {kind.replace('_', ' ')}" for kind, mark in EVENT_MARKS.items()]
    lines += _entries("legend: ", entries, width)
    return lines


def _entries(prefix: str, entries: Sequence[str], width: int) -> list[str]:
    """`prefix` and the entries two spaces apart, wrapped between entries, never inside."""
    lines: list[str] = []
    line = prefix
    for entry in entries:
        joined = line + entry if line == prefix else f"{line}  {entry}"
        if len(joined) > width and line != prefix:
            lines.append(line)
            line = " " * len(prefix) + entry
        else:
            line = joined
    lines.append(line)
    return [text[:width] for text in lines]


def _cells(
    row: DeployRow, now: datetime, start: datetime, scale: float, width: int
) -> list[tuple[str, str | None]]:
    """(character, state for its colour) per cell."""
    cells: list[tuple[str, str | None]] = [(EMPTY, None)] * width

    def span_of(begin: datetime, finish: datetime) -> tuple[int, int]:
        left = round((begin - start).total_seconds() / scale)
        right = round((finish - start).total_seconds() / scale)
        return min(max(left, 0), width - 1), min(max(right, 0), width)

    for gap in row.gaps:
        left, right = span_of(gap.start, gap.end)
        for index in range(left, right):
            cells[index] = (GAP, None)
    marks: list[tuple[int, str, str]] = []
    for segment in row.segments:
        left, right = span_of(segment.start, segment.end or now)
        letter = LETTERS.get(segment.state, "?")
        for index in range(left, right):
            cells[index] = (letter, segment.state)
        if segment.resumed:
            marks.append((left, RESUME, segment.state))
        if _failed(segment):
            marks.append((max(right - 1, left), FAILED_MARK, segment.state))
    # Marks go on last: a resume or a failure stays visible however short its visit.
    for index, mark, state in marks:
        cells[index] = (mark, state)
    return cells


def _failed(segment: Segment) -> bool:
    return bool(segment.error) and not segment.interrupted


def _paint(cells: list[tuple[str, str | None]], colour: bool) -> str:
    if not colour:
        return "".join(char for char, _ in cells)
    out: list[str] = []
    current: str | None = None
    for char, state in cells:
        style = (
            f"\x1b[30;{_BACKGROUNDS.get(state, 47)}m"
            if state
            else ("\x1b[1;31m" if char == GAP else "")
        )
        if style != current:
            out.append(_RESET if current else "")
            out.append(style)
            current = style
        out.append(char)
    if current:
        out.append(_RESET)
    return "".join(out)


def _outcome_text(outcome: str, colour: bool, width: int) -> str:
    text = f"{outcome.replace('_', ' '):<{width}}"
    if colour and outcome in _OUTCOME_COLOURS:
        return f"\x1b[{_OUTCOME_COLOURS[outcome]}m{text}{_RESET}"
    return text


def _details(row: DeployRow, view: RolloutView) -> list[str]:
    now = view.now
    moved = f"{view.revision_text(row.from_revision)} → {view.revision_text(row.to_revision)}"
    parts = []
    for segment in row.segments:
        if segment.interrupted:
            continue
        text = f"{segment.state} {duration_text(segment.duration(now))}"
        if segment.skipped:
            text = f"{segment.state} skipped"
        if segment.attempt > 1:
            text += f" (attempt {segment.attempt})"
        if segment.end is None:
            text += " (now)"
        parts.append(text)
    details = [moved, " · ".join(parts)]
    hooks = [
        f"{hook_text(run)} ({segment.state})"
        for segment in row.segments
        if not segment.interrupted
        for run in segment.hooks
    ]
    if hooks:
        details.append("hooks: " + " · ".join(hooks))
    interrupted = [s for s in row.segments if s.interrupted]
    for gap, stopped in zip(row.gaps, interrupted, strict=False):
        resumed_attempt = stopped.attempt + 1
        details.append(
            f"{RESUME} agent stopped in {gap.state} at {time_text(gap.start)}; resumed "
            f"{duration_text(gap.end - gap.start)} later (attempt {resumed_attempt})"
        )
    if row.reason:
        word = "failed" if row.outcome == "failed" else "rolled back"
        if row.outcome == RUNNING:
            word = "failing"
        details.append(f"{FAILED_MARK} {word}: {row.reason}")
    return details


def duration_text(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def time_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
