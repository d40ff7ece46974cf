"""One measured figure (its samples, median and spread), the table that shows them and
the JSON file that keeps them, so that later changes can be compared with them."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import ROOT


@dataclass
class Figure:
    """Samples of one quantity; the table shows their median and min–max."""

    benchmark: str  # the `--only` name that produced it
    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    note: str = ""
    target: str = ""  # what the figure should be, as the issue that set it says (`≤ 0.15 s`)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": min(self.samples),
            "max": max(self.samples),
            "runs": len(self.samples),
            "samples": self.samples,
            "note": self.note,
            "target": self.target,
        }


def number(value: float) -> str:
    """Short and readable: integers as such, small values with a decimal or two."""
    if value == int(value) and abs(value) >= 10:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def seconds_of(work: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call, and its result."""
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def print_table(figures: Iterable[Figure], out: Any = sys.stdout) -> None:
    header = ["BENCHMARK", "FIGURE", "MEDIAN", "MIN–MAX", "UNIT", "TARGET", "RUNS", "NOTE"]
    rows = [
        [
            f.benchmark,
            f.name,
            number(f.median),
            f"{number(min(f.samples))}–{number(max(f.samples))}",
            f.unit,
            f.target,
            str(len(f.samples)),
            f.note,
        ]
        for f in figures
    ]
    widths = [max(len(row[n]) for row in [header, *rows]) for n in range(len(header))]
    right = {2, 3, 6}  # numbers line up on the right
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if n in right else cell.ljust(width)
            for n, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip(), file=out)


def conditions() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
        check=False,
    ).stdout.strip()  # fmt: skip
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
        text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit + ("+changes" if dirty else ""),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": list(os.getloadavg()),
    }


def write_json(
    path: Path, figures: list[Figure], settings: dict[str, Any], before: dict[str, Any]
) -> None:
    """`before` is what `conditions()` said when the benchmarks started."""
    document = {
        **before,
        "load_average_after": list(os.getloadavg()),
        "settings": settings,
        "figures": [f.as_json() for f in figures],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
