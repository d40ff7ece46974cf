"""The trace page says why a rollout failed without scrolling, in headless Chromium: the
failed deploy's reason in its row (wrapped, pinned beside the names) and in the list of
failures at the top, both inside the viewport at 1400x900 and 1024x768, and the red text
there in a screenshot; the scheduler's events on a row of their own. How the page is
driven and read is `test_trace_html`'s (console errors, --dump-dom, a PNG decoder)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from flotilla.cli.trace import html, model
from flotilla.cli.trace.model import RolloutView
from flotilla.engine.records import HistoryEntry
from tests.integration.test_trace_html import chromium, console_lines, png_pixels
from tests.support.trace_fixtures import ROLLED_BACK, record_rollout


@pytest.fixture(scope="module")
def view() -> RolloutView:
    recorded = record_rollout()
    rows = [model.row_from_checkpoint(c) for c in recorded.checkpoints]
    now = max(c.updated_at for c in recorded.checkpoints)
    return model.view_of(model.select_rollout(rows, service="api"), now=now, title="rollout of api")


# --- a failed deploy's reason, in view ----------------------------------------------------

LONG_REASON = (
    "unit flotilla-api-0123456789ab.service failed to start (exited right after it "
    "started): failed/failed, result exit-code, exit status 3; see `systemctl status "
    "flotilla-api-0123456789ab.service`; the journal says: missing configuration file "
    "/etc/api/settings.toml, and the health check of the load balancer never passed"
)
# Written into the page by a test-only script that runs after the page's own: where each
# reason box is, and the window it is drawn in.
MEASURE = """<script>
(function () {
  var boxes = [];
  document.querySelectorAll('.reason, #failures li').forEach(function (e) {
    var r = e.getBoundingClientRect();
    boxes.push({kind: e.className || 'failure', left: r.left, top: r.top, right: r.right,
                bottom: r.bottom, text: e.textContent});
  });
  document.body.setAttribute('data-boxes', JSON.stringify(
    {width: window.innerWidth, height: window.innerHeight, boxes: boxes}));
})();
</script>"""


@pytest.fixture(scope="module")
def failing_page(view: RolloutView, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recorded rollout with a long reason on its rolled-back deploy, the revisions'
    labels, and the scheduler's events, as `trace rollout --html` writes it."""
    rows = [
        replace(row, error=LONG_REASON) if row.instance_id == ROLLED_BACK else row
        for row in view.rows
    ]
    first = min(r.start for r in rows)
    last = max(r.end(view.now) for r in rows)
    history = [
        HistoryEntry(first - timedelta(seconds=2), "rollout_started", "weights changed", {}),
        HistoryEntry(last, "rollout_stopped", "1 deploy(s) failed (max_failures 1)", {}),
        HistoryEntry(last, "reverted", "restored the last good weights", {}),
    ]
    labels = {rows[0].to_revision: "v2", **{r.from_revision: "v1" for r in rows if r.from_revision}}
    failing = model.view_of(
        rows, now=view.now, title="rollout of api to v2", labels=labels,
        events=model.events_of(history, rows),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("failing") / "rollout.html"
    path.write_text(html.render(failing).replace("</body>", MEASURE + "</body>"), "utf-8")
    return path


def boxes_in(page: Path, profile: Path, size: tuple[int, int]) -> dict[str, Any]:
    result = chromium(page, profile, "--dump-dom", size=size)
    assert result.returncode == 0, result.stderr
    assert console_lines(result.stderr) == []
    found = re.search(r'data-boxes="([^"]*)"', result.stdout)
    assert found, "the measuring script did not run"
    measured: dict[str, Any] = json.loads(unescape(found.group(1)))
    return measured


@pytest.mark.parametrize("size", [(1400, 900), (1024, 768)], ids=["1400x900", "1024x768"])
def test_a_failed_deploys_reason_is_inside_the_viewport(
    failing_page: Path, tmp_path: Path, size: tuple[int, int]
) -> None:
    measured = boxes_in(failing_page, tmp_path / "profile", size)
    # The window's inner size (headless --dump-dom keeps room for browser chrome, so the
    # height is less than the window's: a stricter test than the screenshot's).
    width, height = measured["width"], measured["height"]
    assert width == size[0]
    assert height <= size[1]
    reasons = [b for b in measured["boxes"] if b["kind"] == "reason"]
    listed = [b for b in measured["boxes"] if b["kind"] == "failure"]
    assert len(reasons) == 1  # in the row, under the bar of the deploy that failed
    assert len(listed) == 1  # and in the failures list at the top
    for box in (*reasons, *listed):
        assert "missing configuration file" in box["text"]
        assert 0 <= box["left"] < box["right"] <= width, box  # wrapped, not run off
        assert 0 <= box["top"] < box["bottom"] <= height, box  # no scrolling needed
    assert "v1 (" in listed[0]["text"]  # revisions by label beside their ids
    assert "→ v2 (" in listed[0]["text"]

    # The screenshot shows it: the reason's red text is drawn inside its box.
    shot = tmp_path / "shot.png"
    chromium(failing_page, tmp_path / "profile-shot", f"--screenshot={shot}", size=size)
    shot_width, shot_height, pixels = png_pixels(shot.read_bytes())
    assert (shot_width, shot_height) == size
    box = reasons[0]
    red = 0
    for y in range(int(box["top"]), int(box["bottom"])):
        line = pixels[y]
        for x in range(int(box["left"]), int(box["right"])):
            r, g, b = line[3 * x : 3 * x + 3]
            red += r > 120 and g < 90 and b < 90  # the reason's colour, #9b1c1c, antialiased
    assert red > 200, f"only {red} red pixels where the reason should be"


def test_the_scheduler_has_a_row_of_its_own(failing_page: Path, tmp_path: Path) -> None:
    result = chromium(failing_page, tmp_path / "profile", "--dump-dom")
    assert console_lines(result.stderr) == []
    dom = result.stdout
    assert '<div class="row scheduler">' in dom
    kinds = re.findall(r'<div class="event ([a-z_]+)(?: end)?" data-event="\d+"', dom)
    assert kinds[0] == "rollout_started"
    assert "wave" in kinds
    assert {"rollout_stopped", "reverted"} <= set(kinds)
    # the deploy rows are still one per instance, and the filters count only them
    assert "4 of 4 deploys shown" in dom
