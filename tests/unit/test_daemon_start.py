"""The daemons' start-up calls (cli.daemon.at_start): what may pass is retried with
back-off and every failed attempt logged; what will not pass stops the daemon at once;
SIGTERM during the waits ends it cleanly."""

from __future__ import annotations

import logging
import threading

import click
import pytest

from flotilla.cli.daemon import START_UP, at_start
from flotilla.engine.deploy.retry import RetryPolicy
from flotilla.engine.errors import NotFoundError, TransientError

QUICK = RetryPolicy(attempts=4, initial_seconds=0.001, max_seconds=0.002)


class Flaky:
    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.error = error or TransientError("finding the events queue: cannot reach SQS (X)")

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "queue"


def test_what_may_pass_is_retried_and_each_attempt_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    call = Flaky(failures=2)
    with caplog.at_level(logging.WARNING, logger="flotilla.cli.daemon"):
        assert (
            at_start("finding the events queue", call, threading.Event(), policy=QUICK) == "queue"
        )
    assert call.calls == 3
    assert [r.getMessage() for r in caplog.records] == [
        "finding the events queue failed (attempt 1 of 4): finding the events queue: cannot "
        "reach SQS (X); trying again with back-off",
        "finding the events queue failed (attempt 2 of 4): finding the events queue: cannot "
        "reach SQS (X); trying again with back-off",
    ]


def test_what_will_not_pass_stops_at_once() -> None:
    call = Flaky(failures=5, error=NotFoundError("service 'nosuch' does not exist"))
    with pytest.raises(NotFoundError, match="nosuch"):
        at_start("finding service nosuch", call, threading.Event(), policy=QUICK)
    assert call.calls == 1


def test_giving_up_says_how_long_it_tried() -> None:
    call = Flaky(failures=10)
    with pytest.raises(TransientError, match=r"gave up after 4 attempts at start-up"):
        at_start("finding the events queue", call, threading.Event(), policy=QUICK)
    assert call.calls == 4


def test_sigterm_while_waiting_ends_the_daemon_cleanly() -> None:
    stop = threading.Event()
    stop.set()
    call = Flaky(failures=10)
    with pytest.raises(click.exceptions.Exit) as ended:
        at_start("finding the events queue", call, stop)
    assert ended.value.exit_code == 0
    assert call.calls == 1


def test_the_start_up_policy_tries_for_about_a_minute_and_a_half() -> None:
    waits = [min(START_UP.initial_seconds * 2**n, START_UP.max_seconds) for n in range(7)]
    assert START_UP.attempts == 8
    assert 60 <= sum(waits) <= 120
