"""AWS calls made for a person at a terminal: short time-outs, a few retries, said aloud.

A daemon's calls (`adapters.dynamodb_codec.CLIENT_CONFIG`: 5 s to connect, 10 s to read,
three attempts by botocore) may take half a minute to give up; a person who typed a
command would watch 30 s of silence. So the clients of CLI commands read for at most
`READ_SECONDS`, botocore makes one attempt, and Flotilla retries a transient failure
(no connection, no answer in time, throttling, a 5xx) itself, `CLI_CALLS.attempts` times
in all with a back-off of a second or two, printing a note before each new attempt; the
worst case, an endpoint that accepts connections and never answers, gives up in about
15 s. Only one layer retries, so they do not multiply. A condition that failed (another
writer won) or any other answer is never retried here: it is an answer.

The retries go through the engine's one retry helper (`engine.deploy.retry.with_retries`,
the only user of tenacity) with the named policy `CLI_CALLS`; the botocore exception of
the last attempt reaches the adapter unchanged, which translates it as always.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
)

from flotilla.adapters.aws_errors import error_code, is_transient
from flotilla.engine.clock import Clock
from flotilla.engine.deploy.retry import RetryPolicy, with_retries
from flotilla.engine.errors import TransientError

CONNECT_SECONDS = 2
READ_SECONDS = 4
CLI_CALLS = RetryPolicy(attempts=3, initial_seconds=1.0, max_seconds=2.0)
# One attempt per botocore call: the retries are ours (and said), not botocore's (silent).
CLI_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 1},
    connect_timeout=CONNECT_SECONDS,
    read_timeout=READ_SECONDS,
)


class _Retryable(TransientError):
    """A transient botocore failure, carried through the retry helper."""

    def __init__(self, original: Exception, message: str) -> None:
        super().__init__(message)
        self.original = original


def failure_text(error: Exception) -> str:
    """A few words on why a call failed, for the note before the next attempt."""
    if isinstance(error, ClientError):
        return f"answered {error_code(error)}"
    if isinstance(error, HTTPClientError) and "timeout" in type(error).__name__.lower():
        return f"no answer within {READ_SECONDS} s"
    if isinstance(error, ConnectionError):
        return f"no connection ({type(error).__name__})"
    return type(error).__name__


def _transient(error: Exception) -> bool:
    if isinstance(error, ClientError):
        return is_transient(error)
    return isinstance(error, ConnectionError | HTTPClientError)


class RetryingClient:
    """A boto3 client whose API calls are retried as the module says; every other
    attribute (`meta`, `exceptions`, ...) is the client's own."""

    def __init__(self, client: Any, clock: Clock) -> None:
        self._client = client
        self._service = str(client.meta.service_model.service_id)  # "DynamoDB", "SQS"
        self._clock = clock
        self._operations = frozenset(client.meta.method_to_api_mapping)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in self._operations:
            return attribute
        return self._retrying(name, attribute)

    def _retrying(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        operation = self._client.meta.method_to_api_mapping[name]

        def call(*args: Any, **kwargs: Any) -> Any:
            def attempt() -> Any:
                try:
                    return method(*args, **kwargs)
                except (ClientError, BotoCoreError) as error:
                    if _transient(error):
                        raise _Retryable(error, failure_text(error)) from error
                    raise

            def say(error: BaseException, attempt_number: int) -> None:
                click.echo(
                    f"note: {self._service} {operation}: {error}; trying again "
                    f"(attempt {attempt_number + 1} of {CLI_CALLS.attempts})",
                    err=True,
                )

            try:
                return with_retries(attempt, clock=self._clock, policy=CLI_CALLS, on_retry=say)
            except _Retryable as exhausted:
                raise exhausted.original from None

        return call
