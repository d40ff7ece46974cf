"""What the two daemons (`flotilla agent`, `flotilla scheduler`) share: their common
options, JSON logging, tracing, the composition root, and a stop flag set by SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from flotilla.cli.observability import configure_logging, configure_tracing
from flotilla.cli.options import Seconds, aws_options, settings_from
from flotilla.cli.otlp_file import OtlpJsonFileExporter
from flotilla.cli.wiring import Wiring

F = TypeVar("F", bound=Callable[..., Any])


def seconds_option(
    name: str, default: float, low: float, high: float, description: str
) -> Callable[[F], F]:
    option: Callable[[F], F] = click.option(
        name,
        type=Seconds(low, high),
        default=default,
        show_default=True,
        help=description,
    )
    return option


def daemon_options(command: F) -> F:
    """--trace-file and the AWS options."""
    command = click.option(
        "--trace-file",
        envvar="FLOTILLA_TRACE_FILE",
        type=click.Path(path_type=Path),
        help="Append spans as OTLP JSON lines",
    )(command)
    return aws_options(command)


def start_daemon(name: str, options: dict[str, Any]) -> tuple[Wiring, threading.Event]:
    """Log JSON lines, trace, build the adapters; SIGTERM or Ctrl-C set the returned flag."""
    configure_logging(json_lines=True)
    exporter = OtlpJsonFileExporter(options["trace_file"]) if options["trace_file"] else None
    configure_tracing(name, exporter)
    wiring = Wiring(
        settings_from(
            options["environment"], options["region"], options["profile"], options["endpoint_url"]
        )
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return wiring, stop
