"""A discrete-event clock: many actors (threads) on one simulated time line, one at a time.

The engine waits only through `Clock.sleep`, so real agents, deploy runners and the real
scheduler can share one simulated time line if `sleep` hands control to whichever actor
wakes next. Every actor is a thread, but exactly one runs at a time (it holds the baton):
`sleep(s)` queues the caller to wake at now + s, moves the clock to the earliest wake-up
in the queue and wakes that actor. The order is fully determined by the wake times and,
for equal times, by the order in which the actors went to sleep: a run is reproducible.

Why threads and not coroutines: the engine is synchronous code (tenacity, `transitions`),
and greenlets are not a dependency of the project. Actors hand over with a
lock each (a binary semaphore: released by the actor handing over, acquired by the one
that waits for its turn).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class SimulationError(AssertionError):
    """An actor died of an exception: the simulation is wrong or the code under it is."""


class SimClock:
    """`Clock` whose `sleep` switches to the next actor instead of waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._queue: list[tuple[datetime, int, threading.Lock]] = []
        # Interruptible sleepers by key (a wake-up channel's address): their queue entry's
        # order number and baton, so `interrupt` can wake them now instead.
        self._sleepers: dict[str, tuple[int, threading.Lock]] = {}
        self._cancelled: set[int] = set()
        self._order = itertools.count()
        self._mutex = threading.Lock()
        self._local = threading.local()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self.switches = 0
        # The thread that builds the simulation is an actor too: it drives and observes.
        self._local.baton = _baton()
        # Called after each switch with the new time (observers; must not sleep).
        self.on_switch: Callable[[datetime], None] | None = None

    # --- the Clock port --------------------------------------------------------------

    def now(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        baton: threading.Lock = self._local.baton
        wake = self._now + timedelta(seconds=max(seconds, 0.0))
        with self._mutex:
            heapq.heappush(self._queue, (wake, next(self._order), baton))
        self._hand_over()
        baton.acquire()

    def sleep_interruptibly(self, seconds: float, key: str) -> None:
        """`sleep`, unless `interrupt(key)` wakes the sleeper earlier (what a long poll on a
        queue does when a message arrives)."""
        baton: threading.Lock = self._local.baton
        wake = self._now + timedelta(seconds=max(seconds, 0.0))
        with self._mutex:
            order = next(self._order)
            heapq.heappush(self._queue, (wake, order, baton))
            self._sleepers[key] = (order, baton)
        self._hand_over()
        baton.acquire()
        with self._mutex:
            if self._sleepers.get(key, (None,))[0] == order:
                del self._sleepers[key]

    def interrupt(self, key: str) -> None:
        """Wake the actor sleeping on `key` now (after the caller's turn); no-op otherwise."""
        with self._mutex:
            sleeper = self._sleepers.pop(key, None)
            if sleeper is None:
                return
            order, baton = sleeper
            self._cancelled.add(order)
            heapq.heappush(self._queue, (self._now, next(self._order), baton))

    # --- actors ----------------------------------------------------------------------

    def spawn(self, name: str, body: Callable[[], None]) -> threading.Thread:
        """Start an actor; it first runs when the current actor sleeps."""
        baton = _baton()

        def run() -> None:
            self._local.baton = baton
            baton.acquire()
            try:
                body()
            except BaseException as error:
                self.errors.append(
                    f"{name}: {type(error).__name__}: {error}\n"
                    + "".join(traceback.format_exception(error))
                )
            finally:
                self._hand_over()

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._mutex:
            heapq.heappush(self._queue, (self._now, next(self._order), baton))
            self._threads.append(thread)
        thread.start()
        return thread

    def alive(self) -> int:
        return sum(1 for thread in self._threads if thread.is_alive())

    def _hand_over(self) -> None:
        with self._mutex:
            while self._queue and self._queue[0][1] in self._cancelled:
                self._cancelled.discard(heapq.heappop(self._queue)[1])
            if not self._queue:
                return  # the last actor ended
            wake, _, baton = heapq.heappop(self._queue)
            self._now = max(self._now, wake)
            self.switches += 1
        if self.on_switch is not None:
            self.on_switch(self._now)
        baton.release()

    def check(self) -> None:
        if self.errors:
            raise SimulationError(f"{len(self.errors)} actor(s) died; first:\n{self.errors[0]}")


def _baton() -> threading.Lock:
    """Held while its actor waits for its turn; released to give the turn."""
    baton = threading.Lock()
    baton.acquire()
    return baton
