"""What the two daemons (`flotilla agent`, `flotilla scheduler`) share: their common
options, JSON logging, tracing, the composition root, a stop flag set by SIGTERM, and
`at_start`, the way they make the calls they cannot start without.

At start-up a daemon must reach AWS (its service, its events queue). A machine that has
just booted, a network that is not up yet, a throttled account: these pass, so such a
call is retried with back-off (`START_UP`: about a minute and a half in all), each failed
attempt logged with what failed and which attempt it was. What does not pass (no such
service, no permission, a table that does not exist) stops the daemon at once with one
line. The retrying is done here, where the commands start, not inside the agent's or the
scheduler's loops, which keep their own rule for failures once running.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from flotilla.cli.observability import configure_logging, configure_tracing
from flotilla.cli.options import Seconds, aws_options, settings_from
from flotilla.cli.otlp_file import OtlpJsonFileExporter
from flotilla.cli.wiring import Wiring
from flotilla.engine.clock import SystemClock
from flotilla.engine.deploy.retry import RetryPolicy, with_retries
from flotilla.engine.errors import FlotillaError, TransientError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
log = logging.getLogger(__name__)
# Waits of about 1, 2, 4, 8, 16, 30 and 30 s between eight attempts: a minute and a half.
START_UP = RetryPolicy(attempts=8, initial_seconds=1.0, max_seconds=30.0)


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


class _Stopping(Exception):
    """SIGTERM arrived while a start-up call was waiting to be tried again."""


class _StopWaits:
    """The system clock, whose sleeps end at once (and end the start-up) on SIGTERM."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def now(self) -> datetime:
        return SystemClock().now()

    def sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopping


def at_start(
    what: str, call: Callable[[], T], stop: threading.Event, *, policy: RetryPolicy = START_UP
) -> T:
    """`call()`, retried as the module says; `what` names it in the log ("finding the
    events queue"). A SIGTERM while waiting ends the daemon with exit 0."""

    def logged(error: BaseException, attempt: int) -> None:
        reason = error.message if isinstance(error, FlotillaError) else str(error)
        log.warning(
            "%s failed (attempt %d of %d): %s; trying again with back-off",
            what,
            attempt,
            policy.attempts,
            reason,
        )

    try:
        return with_retries(call, clock=_StopWaits(stop), policy=policy, on_retry=logged)
    except TransientError as failed:
        raise TransientError(
            f"{failed.message} (gave up after {policy.attempts} attempts at start-up)"
        ) from failed
    except _Stopping:
        log.info("stopped at start-up, while %s", what)
        raise click.exceptions.Exit(0) from None
