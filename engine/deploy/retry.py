"""Retry policies, named and reused, all with tenacity and the injected clock.

Two kinds of waiting, kept apart on purpose (DESIGN.md):
- `with_retries`: a short in-process budget for calls that failed with a retryable error
  (AWS throttling, 5xx, timeouts). botocore's own retries are in `standard` mode with few
  attempts, so the two layers do not multiply into minutes.
- `poll_until`: a long wait for something outside (drain, health, units settling),
  bounded by a deadline that the caller stored in the checkpoint, so a resumed deploy
  does not get a fresh budget.
Never retried: `ConflictError` (another writer won; retrying would be wrong) and every
other non-retryable error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_exponential_jitter,
)

from flotilla.engine.clock import Clock
from flotilla.engine.errors import FlotillaError

T = TypeVar("T")


class DeadlineExceededError(FlotillaError):
    """A wait ran past its stored deadline."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry a retryable call."""

    attempts: int = 6
    initial_seconds: float = 0.2
    max_seconds: float = 5.0


AWS_CALLS = RetryPolicy()


def _retryable(error: BaseException) -> bool:
    return isinstance(error, FlotillaError) and error.retryable


def with_retries(
    call: Callable[[], T],
    *,
    clock: Clock,
    policy: RetryPolicy = AWS_CALLS,
    on_retry: Callable[[BaseException, int], None] | None = None,
) -> T:
    """Run `call`, retrying retryable errors with exponential back-off and jitter.

    The first attempt runs bare: nearly every call succeeds at once, and the retry
    machinery (a `Retrying` and its state, per call) is built only once one has failed.
    That failure is then replayed to it as its first attempt, so the waits, the attempt
    count and the retry events are what they would have been.
    """
    try:
        return call()
    except FlotillaError as failed:
        if not failed.retryable:
            raise
        replay: list[BaseException] = [failed]

    def attempt() -> T:
        if replay:
            raise replay.pop()
        return call()

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            error = state.outcome.exception()
            if error is not None:
                on_retry(error, state.attempt_number)

    retrying = Retrying(
        retry=retry_if_exception(_retryable),
        wait=wait_exponential_jitter(multiplier=policy.initial_seconds, max=policy.max_seconds),
        stop=stop_after_attempt(policy.attempts),
        sleep=clock.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(attempt)


def poll_until(
    check: Callable[[], bool],
    *,
    deadline: datetime,
    clock: Clock,
    what: str,
    first_wait: float = 0.5,
    max_wait: float = 10.0,
) -> None:
    """Call `check` until it returns True, backing off, until `deadline` passes."""

    def past_deadline(_state: RetryCallState) -> bool:
        return clock.now() >= deadline

    retrying = Retrying(
        retry=retry_if_result(lambda done: not done),
        wait=wait_exponential(multiplier=first_wait, max=max_wait),
        stop=past_deadline,
        sleep=lambda seconds: clock.sleep(
            min(seconds, max((deadline - clock.now()).total_seconds(), 0.0))
        ),
        retry_error_callback=lambda _state: False,
    )
    if retrying(check):
        return
    raise DeadlineExceededError(f"{what} did not happen before its deadline {deadline:%H:%M:%S}Z")
