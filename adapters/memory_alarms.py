"""Alarms in memory, for unit tests and the simulation: an alarm exists once its state is
set. It passes the alarm contract suite (tests/contract/test_alarms.py) that the
CloudWatch adapter passes; `fail_with` makes reads fail, as an unreachable CloudWatch
would."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from flotilla.engine.errors import FlotillaError
from flotilla.engine.ports import AlarmState


class MemoryAlarms:
    """`Alarms` in one process."""

    def __init__(self) -> None:
        self._states: dict[str, AlarmState] = {}
        self._mutex = threading.Lock()
        self.failure: FlotillaError | None = None  # raised by every read while set

    def set_state(self, name: str, state: AlarmState) -> None:
        """Create the alarm `name`, or change its state."""
        with self._mutex:
            self._states[name] = AlarmState(state)

    def delete(self, name: str) -> None:
        with self._mutex:
            self._states.pop(name, None)

    def fail_with(self, error: FlotillaError | None) -> None:
        """Make every read raise `error` (None: read again)."""
        self.failure = error

    def states(self, names: Sequence[str]) -> dict[str, AlarmState]:
        with self._mutex:
            if self.failure is not None:
                raise self.failure
            return {name: self._states[name] for name in names if name in self._states}
