"""The trace viewer's web page in headless Chromium, and `--from-otlp` against a real agent.

How the page is checked, and why this way:
- console errors: Chromium runs with `--enable-logging=stderr --v=0`, which logs every
  console message of the page (uncaught exceptions, `console.error`, Content-Security-
  Policy violations such as a blocked fetch) as an `INFO:CONSOLE` line on stderr. The page
  itself logs nothing, so any such line is a failure. A deliberately broken page proves the
  detector is not blind (`test_the_console_detector_sees_errors`).
- the DOM: `--dump-dom` prints the document after its scripts ran; the page's script marks
  `<body data-ready="true">` as its last act, and draws one `.row` per deploy.
- the screenshot: `--screenshot` writes a PNG; a small decoder here (zlib, the five PNG
  filters) counts colours, so a blank or one-colour page fails without a new dependency.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from flotilla.cli.trace import html, model
from flotilla.cli.trace.model import RolloutView
from tests.support.trace_fixtures import (
    INSTANCES,
    SECRET,
    RecordedRollout,
    record_rollout,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium(
    page: Path, profile: Path, *extra: str, size: tuple[int, int] = (1280, 900)
) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists():  # a failure, never a skip: CI must run these
        pytest.fail("Debian's chromium is not installed: run ./scripts/setup", pytrace=False)
    return subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         f"--window-size={size[0]},{size[1]}", "--hide-scrollbars", *extra, page.as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) bytes of an 8-bit truecolour PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, header = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8
    assert colour_type in (2, 6)
    channels = 4 if colour_type == 6 else 3
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + best) & 0xFF
        rows.append(bytes(line[i] for i in range(stride) if i % channels < 3))
        previous = line
    return width, height, rows


@pytest.fixture(scope="module")
def recorded() -> RecordedRollout:
    return record_rollout()


@pytest.fixture(scope="module")
def view(recorded: RecordedRollout) -> RolloutView:
    rows = [model.row_from_checkpoint(c) for c in recorded.checkpoints]
    now = max(c.updated_at for c in recorded.checkpoints)
    return model.view_of(model.select_rollout(rows, service="api"), now=now, title="rollout of api")


@pytest.fixture(scope="module")
def page(view: RolloutView, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("page") / "rollout.html"
    path.write_text(html.render(view), encoding="utf-8")
    return path


def test_the_console_detector_sees_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><body><script>notDefined();</script></body>")
    result = chromium(broken, tmp_path / "profile", "--dump-dom")
    assert any("notDefined" in line for line in console_lines(result.stderr)), result.stderr


def test_the_page_runs_without_console_errors_and_draws_one_row_per_instance(
    page: Path, tmp_path: Path
) -> None:
    result = chromium(page, tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr
    assert console_lines(result.stderr) == []
    dom = result.stdout
    assert 'data-ready="true"' in dom  # the script ran to its end
    instances = re.findall(r'<div class="row [a-z_]+" data-instance="([^"]+)"', dom)
    assert sorted(instances) == sorted(INSTANCES)
    assert dom.count('class="seg') > 4 * 9  # every state of every deploy
    assert dom.count('<div class="gap"') == 1  # the crash gap
    assert "seg resumed" in dom
    assert "seg error" in dom  # the failed health check
    assert "4 of 4 deploys shown" in dom
    assert SECRET not in dom


def test_the_screenshot_is_not_blank(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    result = chromium(page, tmp_path / "profile", f"--screenshot={shot}")
    assert shot.exists(), result.stderr
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 900)
    colours: dict[bytes, int] = {}
    for line in rows[::2]:
        for x in range(0, len(line), 6):
            pixel = line[x : x + 3]
            colours[pixel] = colours.get(pixel, 0) + 1
    background, most = max(colours.items(), key=lambda item: item[1])
    sampled = sum(colours.values())
    assert len(colours) > 20, "a blank or one-colour page"
    assert most / sampled < 0.97, "almost everything is the background colour"
    state_colours = {bytes.fromhex(c[1:]) for c in html.COLOURS.values()}
    assert len(state_colours & set(colours)) >= 4  # the timeline's segments are drawn
    assert background != b"\x00\x00\x00"


def test_everything_is_escaped(view: RolloutView, tmp_path: Path) -> None:
    nasty = "</script><script>alert(1)</script><img src=x onerror=alert(2)>&amp;"
    row = replace(view.rows[0], instance_id="i-<b>bold</b>", error=nasty)
    hostile = replace(view, rows=(row, *view.rows[1:]), title="<h1>title</h1>")
    text = html.render(hostile)
    assert "<script>alert(1)" not in text
    assert "<img src=x" not in text
    assert "<b>bold</b>" not in text
    assert "<h1>title</h1>" not in text
    path = tmp_path / "hostile.html"
    path.write_text(text, encoding="utf-8")
    result = chromium(path, tmp_path / "profile", "--dump-dom")
    assert console_lines(result.stderr) == []
    assert 'data-ready="true"' in result.stdout
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in result.stdout  # shown as text
    assert 'data-instance="i-&lt;b&gt;bold&lt;/b&gt;"' in result.stdout


def test_the_page_fetches_nothing(page: Path) -> None:
    text = page.read_text()
    assert "default-src 'none'" in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<link" not in text


# --- --from-otlp against a real agent's spans --------------------------------------------


def shape(row: model.DeployRow) -> tuple[object, ...]:
    """A row without its times (spans and checkpoints take their clocks a moment apart)."""
    segments = tuple(
        (s.state, s.attempt, s.error, s.resumed, s.interrupted, s.skipped, s.span_id)
        for s in row.segments
    )
    return (row.deploy_id, row.instance_id, row.service, row.from_revision, row.to_revision,
            row.trace_id, row.outcome, row.error, row.rollback_error, segments)  # fmt: skip


@pytest.mark.slow
def test_from_otlp_gives_the_rows_of_the_dynamodb_history(tmp_path: Path) -> None:
    import os

    from flotilla.engine.liveness import expiry_for
    from flotilla.engine.records import Instance, Service
    from flotilla.engine.revisions import build_revision
    from tests.support.agents import FLOTILLA, aws_world, start_agent, wait_for
    from tests.support.aws import REGION

    with aws_world(f"trace{os.getpid()}") as world:
        service, instance_id = "traced", "i-traced"
        world.store.create_service(Service(service, settle_seconds=1))
        unit = {"app.service": "[Service]\nExecStart=/bin/sleep 600\n"}
        revisions = [
            world.store.put_revision(
                build_revision(service, label, unit, {"app.service": {"TOKEN": SECRET}},
                               world.secrets, world.clock.now())
            )
            for label in ("v1", "v2")
        ]  # fmt: skip
        now = world.clock.now()
        world.store.register_instance(
            Instance(instance_id, service, "test", now, now), expires_at=expiry_for(now)
        )
        agents = []
        try:
            for revision, fault in zip(revisions, (None, "starting:after-effect"), strict=True):
                current = world.store.get_instance(service, instance_id)
                world.store.set_assignment(
                    service, instance_id, revision.id, expected_version=current.assignment_version
                )
                if fault:
                    doomed = start_agent(world, tmp_path, service, instance_id, fault=fault)
                    assert doomed.process.wait(timeout=60) == -9
                agents.append(start_agent(world, tmp_path, service, instance_id))

                def deployed(wanted: str = revision.id) -> bool:
                    deploys = world.store.list_instance_deploys(service, instance_id)
                    return any(d.to_revision == wanted and d.finished for d in deploys)

                wait_for(deployed, 90, f"{revision.label} deployed")
                assert agents[-1].terminate() == 0
        finally:
            for agent in agents:
                agent.kill()
            from flotilla.adapters.process_runtime import ProcessRuntime

            runtime = ProcessRuntime(tmp_path / instance_id / "process")
            runtime.stop(runtime.owned_units())

        spans = tmp_path / "spans.jsonl"
        history = [model.row_from_checkpoint(c) for c in world.store.list_deploys(service)]
        from_spans = model.rows_from_otlp_text(spans.read_text().splitlines())
        assert len(history) == 2
        assert sorted(shape(r) for r in from_spans) == sorted(shape(r) for r in history)
        resumed = next(r for r in history if r.to_revision == revisions[1].id)
        assert [s.state for s in resumed.segments if s.resumed] == ["starting"]
        otlp_rows = {r.deploy_id: r for r in from_spans}
        # The same moments, give or take the time to write a checkpoint on a loaded machine.
        for row in history:
            for ours, theirs in zip(row.segments, otlp_rows[row.deploy_id].segments, strict=True):
                assert abs((ours.start - theirs.start).total_seconds()) < 10
                assert ours.end is not None
                assert theirs.end is not None
                assert abs((ours.end - theirs.end).total_seconds()) < 10

        def flotilla(*args: str) -> str:
            aws = ["--endpoint-url", world.endpoint, "--env", world.environment,
                   "--region", REGION]  # fmt: skip
            done = subprocess.run([FLOTILLA, "trace", *args, *aws], capture_output=True,
                                  text=True, timeout=60, check=False)  # fmt: skip
            assert done.returncode == 0, done.stderr
            return done.stdout + done.stderr

        texts = {
            "history": flotilla("rollout", service, "--width", "120"),
            "otlp": flotilla("rollout", service, "--width", "120", "--from-otlp", str(spans)),
        }
        for text in texts.values():
            assert f"{instance_id} " in text
            assert "↻ agent stopped in starting" in text
            assert "succeeded" in text
            assert "1 instances · 1 succeeded · 0 rolled back" in text
            assert "\x1b[" not in text  # not a terminal: no colour
        assert "rollout of traced to v2" in texts["history"]  # the store knows labels
        deploy_page = tmp_path / "deploy.html"
        flotilla("deploy", resumed.deploy_id, "--html", str(deploy_page), "--from-otlp", str(spans))
        rollout_page = tmp_path / "rollout.html"
        flotilla("rollout", service, "--revision", "v1", "--html", str(rollout_page))
        for text in [*texts.values(), deploy_page.read_text(), rollout_page.read_text()]:
            assert SECRET not in text
        assert SECRET not in spans.read_text()
        missing = subprocess.run(
            [FLOTILLA, "trace", "deploy", "nope.1", "--from-otlp", str(spans)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert missing.returncode == 1
        assert missing.stderr.startswith("error: no spans of deploy 'nope.1'")
        assert "Traceback" not in missing.stderr
