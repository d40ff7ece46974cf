"""The in-memory event queue waits as SQS long-polls: whole seconds, rounded down. A fake
that waited fractions would hide from the simulations what the scheduler sees on SQS (it
once hid that a one-second gathering window after a deploy's end never waited there)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flotilla.adapters.memory_events import MemoryEventQueue
from flotilla.engine.clock import FakeClock


@pytest.mark.parametrize(
    ("asked", "waited"),
    [(0.0, 0.0), (0.2, 0.0), (0.999, 0.0), (1.0, 1.0), (1.7, 1.0), (2.5, 2.0)],
)
def test_an_empty_queue_is_waited_on_for_whole_seconds_rounded_down(
    asked: float, waited: float
) -> None:
    clock = FakeClock()
    queue = MemoryEventQueue(clock)
    before = clock.now()
    assert queue.receive(wait=timedelta(seconds=asked)) == []
    assert (clock.now() - before).total_seconds() == pytest.approx(waited)
