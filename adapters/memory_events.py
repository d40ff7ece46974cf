"""An event queue in memory, with SQS's semantics, for unit tests, simulations and the demo.

At-least-once, like an SQS standard queue: a received event is invisible to other
receivers until its visibility timeout passes on the injected clock, then it is
delivered again unless it was acknowledged. Each delivery gets a new receipt and only
the latest receipt acknowledges. Bodies go through the same JSON codec as SQS messages,
so an event SQS would refuse is refused here too. A receive waits whole seconds, rounded
down, as SQS long-polls: a wait under a second looks once. It passes the event queue
contract.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from flotilla.adapters import items
from flotilla.engine.clock import Clock
from flotilla.engine.errors import ValidationError
from flotilla.engine.ports import Event

# How often a waiting receive looks again (on the injected clock: a fake clock just moves).
POLL = timedelta(milliseconds=50)
MAX_BATCH = 10  # SQS returns at most ten messages per receive


@dataclass
class _Message:
    body: str
    visible_at: datetime
    receipt: str | None = None


class MemoryEventQueue:
    """`EventQueue` held in a dict, under one mutex."""

    def __init__(self, clock: Clock, *, visibility_timeout: timedelta = timedelta(seconds=30)):
        self._clock = clock
        self._visibility = visibility_timeout
        self._mutex = threading.Lock()
        self._messages: dict[int, _Message] = {}
        self._ids = itertools.count(1)
        self._receipts = itertools.count(1)

    def send(self, event: Event) -> None:
        self.deliver(items.event_to_json(event))

    def deliver(self, body: str) -> None:
        """A message as another sender wrote it (EventBridge's EC2 notifications)."""
        with self._mutex:
            self._messages[next(self._ids)] = _Message(body, self._clock.now())

    def receive(self, *, wait: timedelta, max_events: int = 10) -> list[Event]:
        # Whole seconds, rounded down, as SQS long-polls (adapters/sqs_events.py).
        deadline = self._clock.now() + timedelta(seconds=max(0, int(wait.total_seconds())))
        while True:
            found = self._take(max(1, min(max_events, MAX_BATCH)))
            remaining = deadline - self._clock.now()
            if found or remaining <= timedelta(0):
                return found
            self._clock.sleep(min(remaining, POLL).total_seconds())

    def _take(self, limit: int) -> list[Event]:
        now = self._clock.now()
        taken: list[Event] = []
        with self._mutex:
            for message_id, message in self._messages.items():
                if len(taken) == limit:
                    break
                if message.visible_at > now:
                    continue
                message.receipt = f"{message_id}:{next(self._receipts)}"
                message.visible_at = now + self._visibility
                taken.append(items.event_from_json(message.body, message.receipt))
        return taken

    def ack(self, *events: Event) -> None:
        message_ids = [self._message_id(event) for event in events]  # all checked first
        with self._mutex:
            for event, message_id in zip(events, message_ids, strict=True):
                message = self._messages.get(message_id)
                # A stale receipt (the event was delivered again since) deletes nothing.
                if message is not None and message.receipt == event.receipt:
                    del self._messages[message_id]

    @staticmethod
    def _message_id(event: Event) -> int:
        if event.receipt is None:
            raise ValidationError(
                f"event {event.kind!r} of {event.service!r} was not received from a queue; "
                "only received events can be acknowledged"
            )
        try:
            return int(event.receipt.split(":", 1)[0])
        except ValueError as exc:
            raise ValidationError(f"{event.receipt!r} is not a receipt of this queue") from exc

    def pending(self) -> int:
        """Events not yet acknowledged, visible or not (for tests and the demo)."""
        with self._mutex:
            return len(self._messages)
