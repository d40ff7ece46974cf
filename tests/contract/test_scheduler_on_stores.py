"""Scheduler passes on every store, DynamoDB Local included: an operator's weight change
that lands in the middle of a pass (after it read the service, before it writes) is never
lost, and a pass over unchanged inputs writes nothing."""

from __future__ import annotations

import threading

from flotilla.engine.records import RolloutStatus
from flotilla.engine.updates import set_weights
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from tests.contract.conftest import Backend
from tests.support.scheduler_world import V1, CountingStore, FakeAgents, make_service, register

CHANGES = 8


def test_weight_changes_during_passes_are_never_lost(concurrent_backend: Backend) -> None:
    store, clock = concurrent_backend.store, concurrent_backend.clock
    make_service(store, weights={V1: 100}, max_in_flight="100%")
    register(store, clock, "api", 3)
    agents = FakeAgents(store, clock, "api")
    counting = CountingStore(store)
    passes = SchedulerPass(counting, clock, PassSettings(), guard=lambda: 1)  # type: ignore[arg-type]
    mid_pass, changed, finished = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold_the_pass(*_args: object) -> None:
        if not finished.is_set():
            mid_pass.set()
            if not changed.wait(timeout=10):
                errors.append(AssertionError("the operator never changed the weights mid-pass"))
            changed.clear()

    def operator() -> None:
        try:
            for n in range(CHANGES):
                if not mid_pass.wait(timeout=10):
                    raise AssertionError("no pass reached list_instances")
                mid_pass.clear()
                set_weights(store, "api", {f"{n:064d}": 1})
                changed.set()
        except BaseException as exc:
            errors.append(exc)
        finally:
            finished.set()
            changed.set()

    counting.before["list_instances"] = hold_the_pass
    thread = threading.Thread(target=operator)
    thread.start()
    while not finished.is_set():
        passes.run()
        agents.settle()
        clock.advance(1)
    thread.join()
    assert not errors
    for _ in range(3):
        passes.run()
        agents.settle()
        clock.advance(1)
    passes.run()
    service = store.get_service("api")
    assert service.weights == {V1: 100, **{f"{n:064d}": 1 for n in range(CHANGES)}}
    assert service.rollout_state.weights == service.weights
    assert service.rollout_state.status is RolloutStatus.COMPLETE

    counting.reset()
    counting.before.clear()
    passes.run()
    assert counting.writes == 0
