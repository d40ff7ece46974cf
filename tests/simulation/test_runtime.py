"""The simulation's in-memory unit runtime keeps the rules of the `UnitRuntime` contract
that need no process (tests/contract/test_unit_runtime.py holds the full contract)."""

from __future__ import annotations

import pytest

from flotilla.engine.errors import UnitFailedError, ValidationError
from flotilla.engine.units import installed_name
from tests.simulation.runtime import MemoryUnitRuntime

REVISION_A = "3f2a9c1b7d4e" + "a" * 52
SLEEPER = "[Service]\nType=exec\nExecStart=/bin/sleep 300\n"


def states(runtime: MemoryUnitRuntime, names: list[str]) -> list[tuple[str, str]]:
    return [(s.active_state, s.sub_state) for s in runtime.status(names)]


def test_every_operation_twice_is_harmless_and_only_owned_names_are_touched() -> None:
    runtime = MemoryUnitRuntime()
    names = runtime.install(REVISION_A, {"web.service": SLEEPER}, {"web.service": {"A": "b"}})
    assert names == [installed_name("web.service", REVISION_A)]
    assert runtime.install(REVISION_A, {"web.service": SLEEPER}, {}) == names
    runtime.start(names)
    runtime.start(names)
    assert states(runtime, names) == [("active", "running")]
    for refused in (runtime.stop, runtime.remove, runtime.start):
        with pytest.raises(ValidationError, match="only stops or removes the units it"):
            refused(["plain.service"])
    runtime.remove(names)
    assert runtime.owned_units() == names, "a removed unit stays owned while it runs"
    runtime.stop(names)
    runtime.stop(names)
    runtime.remove(names)
    assert runtime.owned_units() == []
    assert states(runtime, names) == [("inactive", "dead")]


def test_environments_of_units_not_in_the_revision_are_refused_and_failures_named() -> None:
    runtime = MemoryUnitRuntime(fail_units=frozenset({"web"}))
    with pytest.raises(ValidationError, match="does not contain"):
        runtime.install(REVISION_A, {"web.service": SLEEPER}, {"db.service": {"X": "y"}})
    names = runtime.install(REVISION_A, {"web.service": SLEEPER}, {})
    with pytest.raises(UnitFailedError) as failed:
        runtime.start(names)
    assert (failed.value.unit, failed.value.result, failed.value.exit_status) == (
        names[0],
        "exit-code",
        1,
    )
