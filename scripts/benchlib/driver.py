"""`scripts/bench`: run the benchmarks, print one table, write it as JSON.

Each benchmark is a module of this package with `run(runs, quick) -> list[Figure]`; the
driver only chooses, times and reports them. A benchmark that fails is reported (its
error on standard error and in the JSON) and the others still run; the exit status is
then 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from benchlib import ROOT
from benchlib.figures import Figure, conditions, print_table, write_json


@dataclass(frozen=True)
class Benchmark:
    module: str
    runs: int  # by default
    quick_runs: int  # with --quick
    what: str


BENCHMARKS = {
    "scheduler": Benchmark("scheduler_pass", 3, 3, "scheduler pass at 1k/10k/100k instances"),
    "deploys": Benchmark("deploys", 15, 7, "engine overhead and DynamoDB calls per deploy"),
    "restart": Benchmark("restart", 5, 3, "agent restart to resumed step (agent processes)"),
    "rollout": Benchmark("rollout", 3, 2, "rollout of 20 instances, max_in_flight 1, 2, 5"),
    "revert": Benchmark("revert", 3, 2, "fast revert of 10 instances, max_in_flight 2"),
    "reaction": Benchmark("reaction", 5, 3, "weight change to first deploy: SQS vs polling"),
    "trace": Benchmark("trace", 5, 3, "trace viewer, 1000 instances"),
    "startup": Benchmark("startup", 15, 7, "flotilla --help, keys --help and keys USER start-up"),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Run Flotilla's benchmarks; print one table and write it as JSON.",
        epilog="benchmarks: " + "; ".join(f"{name}: {b.what}" for name, b in BENCHMARKS.items()),
    )
    parser.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
        help="run only this benchmark (repeatable): " + ", ".join(BENCHMARKS),
    )  # fmt: skip
    parser.add_argument("--runs", type=int, help="runs per figure (default: per benchmark)")
    parser.add_argument("--quick", action="store_true", help="fewer runs and shapes, no Chromium")
    parser.add_argument(
        "--out", type=Path,
        help="JSON file [default: build/bench.json, or build/bench-NAME.json with --only]",
    )  # fmt: skip
    parser.add_argument("--no-browser", action="store_true", help="skip headless Chromium")
    arguments = parser.parse_args(argv)
    if arguments.runs is not None and arguments.runs < 1:
        parser.error("--runs must be at least 1")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse(argv)
    chosen = arguments.only or list(BENCHMARKS)
    out = arguments.out or ROOT / "build" / (
        "bench.json" if arguments.only is None else f"bench-{'-'.join(chosen)}.json"
    )
    before = conditions()
    figures: list[Figure] = []
    failed: dict[str, str] = {}
    took: dict[str, float] = {}
    for name in chosen:
        benchmark = BENCHMARKS[name]
        runs = arguments.runs or (benchmark.quick_runs if arguments.quick else benchmark.runs)
        print(f"bench: {name} ({benchmark.what}), {runs} runs", file=sys.stderr, flush=True)
        module = importlib.import_module(f"benchlib.{benchmark.module}")
        options = {"browser": False} if name == "trace" and arguments.no_browser else {}
        started = time.monotonic()
        try:
            figures += module.run(runs, arguments.quick, **options)
        except Exception as error:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed[name] = f"{type(error).__name__}: {error}"
        took[name] = round(time.monotonic() - started, 1)
        print(f"bench: {name} took {took[name]:.0f} s", file=sys.stderr, flush=True)
    print()
    print_table(figures)
    settings = {"quick": arguments.quick, "runs": arguments.runs, "benchmarks": chosen,
                "seconds_per_benchmark": took, "failed": failed}  # fmt: skip
    write_json(out, figures, settings, before)
    load = ", ".join(f"{x:.1f}" for x in before["load_average_before"])
    print(f"\n{before['cpus']} CPUs, load average before: {load}; written to {out}")
    for name, error in failed.items():
        print(f"FAILED {name}: {error}", file=sys.stderr)
    return 1 if failed else 0
