"""The trace viewer: a synthetic rollout of 1000 instances × 10 state visits, drawn in the
terminal and as the HTML page; the page's size, and how long headless Chromium takes to
load and draw it (when Chromium is installed)."""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchlib.figures import Figure, seconds_of
from flotilla.cli.trace import html, model, terminal
from flotilla.engine.checkpoint import DeployCheckpoint, Outcome, Transition

HAPPY = ("pending", "locking", "deregistering", "draining", "stopping", "starting",
         "registering", "healthy", "unlocked")  # fmt: skip
SECONDS = {"draining": 30, "healthy": 20, "starting": 4, "stopping": 2, "locking": 1}


def synthetic_rollout(instances: int, seed: int = 7) -> list[DeployCheckpoint]:
    """Deploys with 10 state visits each: every tenth crash-resumed in `starting` (the
    interrupted visit is the tenth), every twentieth rolled back after `healthy` failed,
    the rest with a `registering` retried by a resumed agent."""
    rng = random.Random(seed)  # noqa: S311 (made-up timings, not secrets)
    begin = datetime(2026, 1, 1, tzinfo=UTC)
    checkpoints = []
    for number in range(instances):
        at = begin + timedelta(seconds=number * 3 + rng.random())
        visits: list[Transition] = []

        def visit(state: str, took: float, visits: list[Transition] = visits, **extra: Any) -> None:
            nonlocal at
            end = at + timedelta(seconds=took)
            visits.append(Transition(state, at, end, span_id=f"{rng.getrandbits(64):016x}",
                                     **extra))  # fmt: skip
            at = end

        failing = number % 20 == 19
        crashing = number % 10 == 3
        error = None
        for state in HAPPY:
            took = SECONDS.get(state, 0.05) * rng.uniform(0.7, 1.6)
            if state in ("starting", "registering") and (crashing == (state == "starting")):
                visit(state, 0, error=model.INTERRUPTED_ERROR)
                at += timedelta(seconds=rng.uniform(5, 60))
                visit(state, took, attempt=2, resumed=True)
                continue
            if failing and state == "healthy":
                error = "the load balancer's health check did not pass before its deadline"
                visit(state, 120, error=error)
                visit("failed", 0.05)
                visit("rolling_back", 25)
                continue
            if failing and state == "registering":
                continue
            visit(state, took)
        checkpoints.append(
            DeployCheckpoint(
                id=f"i-{number:05d}.2", service="api", instance_id=f"i-{number:05d}",
                from_revision="a" * 64, to_revision="b" * 64, state="done", machine_version=1,
                created_at=visits[0].started_at, updated_at=at,
                trace_parent=f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01",
                outcome=Outcome.ROLLED_BACK if failing else Outcome.SUCCEEDED,
                error=error, history=tuple(visits),
            )
        )  # fmt: skip
    return checkpoints


def sampled(runs: int, work: Any) -> tuple[list[float], Any]:
    """Milliseconds of `runs` calls, and the last result."""
    times, result = [], None
    for _ in range(runs):
        seconds, result = seconds_of(work)
        times.append(seconds * 1000)
    return times, result


def chromium_figures(page: str, rows: int) -> list[Figure]:
    chromium = shutil.which("chromium")
    if chromium is None:
        return []
    with tempfile.TemporaryDirectory() as work:
        profile = f"--user-data-dir={work}/profile"

        def load(path: Path) -> str:
            done = subprocess.run(
                [chromium, "--headless", "--disable-gpu", "--no-sandbox", profile,
                 "--window-size=1280,900", "--dump-dom", path.as_uri()],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            return done.stdout

        path = Path(work) / "rollout.html"
        path.write_text(page, encoding="utf-8")
        empty = Path(work) / "empty.html"
        empty.write_text("<!DOCTYPE html><title>empty</title>")
        load(empty)  # a first start warms the profile
        base, _ = sampled(3, lambda: load(empty))
        times, dom = sampled(3, lambda: load(path))
    drawn = dom.count('<div class="row ')
    return [
        Figure("trace", f"headless Chromium: load, draw, dump the page ({rows} rows)", "ms",
               times, f"an empty page: {min(base):.0f} ms; {drawn} rows in the DOM"),
    ]  # fmt: skip


def run(runs: int, quick: bool, instances: int = 1000, browser: bool = True) -> list[Figure]:
    checkpoints = synthetic_rollout(instances)
    visits = sum(len(c.history) for c in checkpoints)
    now = max(c.updated_at for c in checkpoints)
    shape = f"{instances} instances, {visits} state visits"

    def build() -> model.RolloutView:
        return model.from_history(checkpoints, now=now, title="rollout of api to b")

    built, view = sampled(runs, build)
    colour, text = sampled(runs, lambda: terminal.render(view, width=160, colour=True))
    plain, _ = sampled(runs, lambda: terminal.render(view, width=160))
    page_times, page = sampled(runs, lambda: html.render(view))
    lines, kib = len(text.splitlines()), len(text.encode()) / 1024
    figures = [
        Figure("trace", f"model from the deploys' histories, {shape}", "ms", built),
        Figure("trace", "terminal, colour, 160 columns", "ms", colour,
               f"{lines} lines, {kib:.0f} KiB"),
        Figure("trace", "terminal, NO_COLOR", "ms", plain),
        Figure("trace", "HTML page", "ms", page_times, f"{len(page.encode()) / 1024:.0f} KiB"),
    ]  # fmt: skip
    if browser and not quick:
        figures += chromium_figures(page, len(view.rows))
    return figures
