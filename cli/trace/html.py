"""The rollout view as one self-contained web page: styles, script and data inline, and a
Content-Security-Policy that forbids every fetch, so the page opens anywhere, offline.

The header (outcome, totals, and the list of failed deploys with their reasons, so why a
rollout went wrong is the first thing on the page) is HTML written here; the timeline is
drawn by the inline script from the view's data, embedded as JSON that cannot close its
`<script>` element: a first row for the scheduler's events, then one row per deploy, a
failed deploy's reason wrapped on a line of its own under its bar and kept in view when
the timeline is zoomed and scrolled. Revisions read as labels beside their ids. Every
text goes through `html.escape` here or `textContent` in the script: an error message can
hold anything and must never become markup.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from html import escape
from typing import Any

from flotilla.cli.trace.assets import SCRIPT, STYLE
from flotilla.cli.trace.model import OUTCOMES, RolloutView, hook_text, state_order
from flotilla.cli.trace.terminal import EVENT_MARKS, duration_text, time_text
from flotilla.machines.deploy import State

COLOURS: Mapping[str, str] = {
    State.PENDING: "#b8bec6",
    State.LOCKING: "#4c78a8",
    State.DEREGISTERING: "#72b7b2",
    State.DRAINING: "#9ecae9",
    State.STOPPING: "#f2cf5b",
    State.STARTING: "#f58518",
    State.REGISTERING: "#b279a2",
    State.HEALTHY: "#54a24b",
    State.UNLOCKED: "#88d27a",
    State.FAILED: "#e45756",
    State.ROLLING_BACK: "#d67195",
}
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)
SKIPPED, RESUMED, INTERRUPTED = 1, 2, 4


def render(view: RolloutView) -> str:
    data = _data(view)
    totals = view.totals()
    counts = totals.by_outcome
    facts = [
        f"{totals.instances} instances",
        f"{counts['succeeded']} succeeded",
        f"{counts['rolled_back']} rolled back",
        f"{counts['failed']} failed",
        f"{counts['running']} running",
    ]
    if totals.p50 is not None and totals.p95 is not None:
        facts.append(
            f"deploy time p50 {duration_text(totals.p50)}, p95 {duration_text(totals.p95)}"
        )
    if totals.slowest_state is not None:
        slow = totals.slowest_state
        facts.append(
            f"slowest state: {slow.state} ({duration_text(slow.total)} in all, longest "
            f"{duration_text(slow.longest)} on {slow.longest_instance})"
        )
    if view.rows:
        facts.append(
            f"{time_text(view.start)} → {time_text(view.end)} "
            f"({duration_text(view.end - view.start)})"
        )
    legend = "".join(
        f'<span class="key"><i style="background:{COLOURS.get(s, "#999")}"></i>{escape(s)}</span>'
        for s in state_order()
    )
    legend += (
        '<span class="key"><i class="gap"></i>crash gap</span>'
        '<span class="key"><i class="resumed-key"></i>resumed</span>'
        '<span class="key"><i class="error-key"></i>failed step</span>'
    )
    filters = "".join(
        f'<label><input type="checkbox" name="outcome" value="{o}" checked> '
        f'{escape(o.replace("_", " "))} <span class="count">{counts[o]}</span></label>'
        for o in OUTCOMES
    )
    outcome = view.outcome
    outcome_text = escape(outcome.replace("_", " "))
    failures = _failures(view)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(view.title)}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>{escape(view.title)} <span class="outcome {escape(outcome)}">{outcome_text}</span></h1>
<p class="facts">{" · ".join(escape(f) for f in facts)}</p>
<p class="legend">{legend}</p>
{failures}
</header>
<nav class="controls">
<span class="filters">{filters}</span>
<input type="search" id="find" placeholder="instance or deploy id" aria-label="filter instances">
<button type="button" id="zoom-out" title="zoom out (ctrl + wheel)">−</button>
<button type="button" id="zoom-in" title="zoom in (ctrl + wheel)">+</button>
<button type="button" id="zoom-fit" title="whole rollout">fit</button>
<span id="shown"></span>
</nav>
<main id="timeline" aria-label="timeline, one row per instance">
<div id="axis"></div>
<div id="rows"></div>
</main>
<aside id="details" hidden></aside>
<div id="tip" hidden></div>
<script id="trace-data" type="application/json">{_json(data)}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _failures(view: RolloutView) -> str:
    """The deploys that did not succeed, each with its reason; a click shows its row."""
    failed = view.failures
    if not failed:
        return ""
    index = {row.deploy_id: number for number, row in enumerate(view.rows)}
    items = "".join(
        f'<li><button type="button" class="failure" data-row="{index[row.deploy_id]}">'
        f"{escape(row.instance_id)}</button> "
        f'<span class="what">{escape(row.outcome.replace("_", " "))} '
        f"({escape(view.revision_text(row.from_revision))} → "
        f"{escape(view.revision_text(row.to_revision))})</span>: "
        f'<span class="why">{escape(row.reason or "")}</span></li>'
        for row in failed
    )
    count = len(failed)
    return (
        f'<section id="failures"><h2>{count} deploy{"s" if count > 1 else ""} did not '
        f"succeed</h2><ul>{items}</ul></section>"
    )


def _ms(moment: datetime, origin: datetime) -> int:
    return round((moment - origin).total_seconds() * 1000)


def _data(view: RolloutView) -> dict[str, Any]:
    origin = view.start
    states = list(state_order())
    rows = []
    for row in view.rows:
        segments = []
        for s in row.segments:
            index = states.index(s.state) if s.state in states else -1
            flags = (
                (SKIPPED if s.skipped else 0)
                | (RESUMED if s.resumed else 0)
                | (INTERRUPTED if s.interrupted else 0)
            )
            end = _ms(s.end, origin) if s.end is not None else -1
            segments.append([index, _ms(s.start, origin), end, s.attempt, flags, s.error,
                             s.span_id, [hook_text(run) for run in s.hooks]])  # fmt: skip
        gaps = [[_ms(g.start, origin), _ms(g.end, origin)] for g in row.gaps]
        rows.append([row.instance_id, row.deploy_id, row.outcome, row.from_revision,
                     row.to_revision, row.trace_id, row.reason, segments, gaps,
                     _ms(row.end(view.now), origin)])  # fmt: skip
    events = [[_ms(e.at, origin), e.kind, e.text] for e in view.events]
    revisions = {r for row in view.rows for r in (row.from_revision, row.to_revision) if r}
    return {
        "origin": origin.isoformat(),
        "originMs": round(origin.timestamp() * 1000),
        "total": max(_ms(view.end, origin), 1),
        "now": _ms(view.now, origin),
        "states": states,
        "colours": [COLOURS.get(s, "#999999") for s in states],
        "rows": rows,
        "events": events,
        "marks": dict(EVENT_MARKS),
        "labels": {r: view.labels[r] for r in sorted(revisions) if r in view.labels},
    }


def _json(value: Any) -> str:
    """JSON that is safe inside a <script> element: no `<`, `>` or `&`, no line separators."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text
