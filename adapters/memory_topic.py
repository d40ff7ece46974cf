"""An events topic in memory, for unit tests and the simulation: it keeps every notice
published, in order. It passes the topic contract suite (tests/contract/test_event_topic.py)
that the SNS adapter passes; `fail_with` makes publishing fail, as an unreachable SNS
would."""

from __future__ import annotations

import threading

from flotilla.adapters.items.notices import notice_to_json
from flotilla.engine.errors import FlotillaError
from flotilla.engine.ports import Notice


class MemoryEventTopic:
    """`EventTopic` in one process; `notices` is what subscribers would have received."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []
        self.failure: FlotillaError | None = None  # raised by every publish while set
        self._mutex = threading.Lock()

    def publish(self, notice: Notice) -> None:
        notice_to_json(notice)  # what SNS would refuse to carry is refused here too
        with self._mutex:
            if self.failure is not None:
                raise self.failure
            self.notices.append(notice)

    def fail_with(self, error: FlotillaError | None) -> None:
        self.failure = error

    def kinds(self) -> list[str]:
        with self._mutex:
            return [notice.kind for notice in self.notices]
