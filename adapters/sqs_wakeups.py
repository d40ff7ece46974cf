"""Wake-up channels on SQS: one small queue per instance, `flotilla-<env>-wake-<instance>`.

The agent opens its queue (CreateQueue is idempotent) and records the URL on its instance;
the scheduler sends a message there whenever it changes that instance's assignment, so a
weight change reaches the agent within a long poll's answer instead of a poll interval.
A listener thread per queue long-polls (SQS's 20 s, the longest and cheapest: about three
requests a minute while idle) and deletes what arrives; `wait` waits on the listener, in
steps short enough to notice the agent's stop event at once. The scheduler deletes an
instance's queue when it takes the instance out of its service; SQS itself may delete a
queue idle for 30 days. botocore's errors become engine errors at the one AWS edge
(`adapters.aws_errors`); a queue that is gone is `NotFoundError`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from flotilla.adapters import aws_errors
from flotilla.adapters.wake_rings import ring_each
from flotilla.engine.errors import FlotillaError, NotFoundError
from flotilla.engine.validation import environment_name

log = logging.getLogger(__name__)

SERVICE = "SQS"
LONG_POLL_SECONDS = 20  # SQS's longest
MISSING_QUEUE_CODES = frozenset({"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"})
# A wake-up says only "look again": older ones are worth nothing.
RETENTION_SECONDS = 60
STOP_CHECK_SECONDS = 0.5
RETRY_AFTER_SECONDS = 5.0
RINGERS = 8  # rings sent at once by ring_all (botocore's pool holds 10 connections)


def queue_name(environment: str, instance_id: str) -> str:
    return f"flotilla-{environment_name(environment)}-wake-{instance_id}"


class SqsWakeUps:
    """`WakeUps` on SQS for one environment. `stop` ends waits early (SIGTERM)."""

    def __init__(
        self, client: Any, environment: str, *, stop: threading.Event | None = None
    ) -> None:
        self._client = client
        self._environment = environment_name(environment)
        self._stop = stop or threading.Event()
        # A long poll must end before the client gives up reading its answer.
        read_timeout = getattr(client.meta.config, "read_timeout", 60) or 60
        self._long_poll = max(1, min(LONG_POLL_SECONDS, int(read_timeout) - 2))
        self._listeners: dict[str, _Listener] = {}
        self._mutex = threading.Lock()
        self._ringers: ThreadPoolExecutor | None = None  # made at the first ring_all

    def open(self, instance_id: str) -> str:
        name = queue_name(self._environment, instance_id)
        with aws_errors.translated_errors(SERVICE, f"opening the wake-up queue {name}"):
            answer = self._client.create_queue(
                QueueName=name,
                Attributes={
                    "MessageRetentionPeriod": str(RETENTION_SECONDS),
                    "ReceiveMessageWaitTimeSeconds": str(LONG_POLL_SECONDS),
                },
                tags={"flotilla:environment": self._environment, "flotilla:instance": instance_id},
            )
        return str(answer["QueueUrl"])

    def wait(self, address: str, seconds: float) -> bool:
        listener = self._listener(address)
        deadline = time.monotonic() + max(seconds, 0.0)
        while True:
            if listener.gone:
                with self._mutex:
                    self._listeners.pop(address, None)
                raise NotFoundError(f"the wake-up queue {address} is gone")
            if listener.rung.is_set():
                listener.rung.clear()
                return True
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.is_set():
                return False
            listener.rung.wait(min(left, STOP_CHECK_SECONDS))

    def ring(self, address: str) -> None:
        self._call(
            f"waking {address}",
            lambda: self._client.send_message(QueueUrl=address, MessageBody="assignment"),
        )

    def ring_all(self, addresses: Sequence[str]) -> dict[str, FlotillaError]:
        # Each queue is its own SQS call: sent side by side, a pass that refills several
        # slots wakes the last agent after one call's time, not after all of them.
        if len(addresses) <= 1:
            return ring_each(self.ring, addresses)
        with self._mutex:
            if self._ringers is None:
                self._ringers = ThreadPoolExecutor(RINGERS, thread_name_prefix="wake-up ring")
            ringers = self._ringers
        outcomes = ringers.map(lambda address: ring_each(self.ring, [address]), addresses)
        return {address: error for failed in outcomes for address, error in failed.items()}

    def close(self, address: str) -> None:
        with contextlib.suppress(NotFoundError):  # closed already
            self._call(f"deleting {address}", lambda: self._client.delete_queue(QueueUrl=address))
        with self._mutex:
            listener = self._listeners.pop(address, None)
        if listener is not None:
            listener.gone = True

    def _listener(self, address: str) -> _Listener:
        with self._mutex:
            listener = self._listeners.get(address)
            if listener is None:
                listener = _Listener(self, address)
                self._listeners[address] = listener
                listener.start()
        return listener

    def _call(self, what: str, call: Any) -> Any:
        try:
            return call()
        except ClientError as exc:
            if aws_errors.error_code(exc) in MISSING_QUEUE_CODES:
                raise NotFoundError(f"{what}: the wake-up queue does not exist") from exc
            raise aws_errors.translate(exc, SERVICE, what) from exc
        except BotoCoreError as exc:
            raise aws_errors.translate_botocore_error(exc, SERVICE, what) from exc

    def _receive(self, address: str) -> bool:
        """One long poll; True if a wake-up came (and was deleted)."""
        answer = self._call(
            f"waiting on {address}",
            lambda: self._client.receive_message(
                QueueUrl=address, MaxNumberOfMessages=10, WaitTimeSeconds=self._long_poll
            ),
        )
        messages = answer.get("Messages") or []
        if messages:
            entries = [
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)
            ]
            self._call(
                f"clearing {address}",
                lambda: self._client.delete_message_batch(QueueUrl=address, Entries=entries),
            )
        return bool(messages)


class _Listener(threading.Thread):
    """Long-polls one queue for as long as the process runs (or the queue exists)."""

    def __init__(self, owner: SqsWakeUps, address: str) -> None:
        super().__init__(name=f"wake-up listener {address}", daemon=True)
        self._owner = owner
        self._address = address
        self.rung = threading.Event()
        self.gone = False

    def run(self) -> None:
        while not self.gone and not self._owner._stop.is_set():
            try:
                if self._owner._receive(self._address):
                    self.rung.set()
            except NotFoundError:
                self.gone = True
                self.rung.set()  # wake the waiter at once: it finds the queue gone
            except FlotillaError as failed:
                log.warning("wake-up queue: %s", failed.message)
                self._owner._stop.wait(RETRY_AFTER_SECONDS)
