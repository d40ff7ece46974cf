"""Which units a deploy starts, when a unit counts as running well, and the one settle loop."""

from collections.abc import Iterator, Sequence

import pytest

from flotilla.engine.activation import Verdict, judge, plan_activation, settle, unit_failure
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import UnitFailedError
from flotilla.engine.ports import UnitStatus

DAEMON = "[Service]\nExecStart=/usr/bin/web\n"
ONESHOT = "[Service]\nType=oneshot\nExecStart=/usr/bin/migrate\n"
KEPT_ONESHOT = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/bin/setup\n"
TIMER = "[Timer]\nOnCalendar=daily\n"
SOCKET = "[Socket]\nListenStream=8080\nService=web.service\n"


def test_timers_and_sockets_start_and_the_services_they_activate_do_not() -> None:
    plan = plan_activation(
        {
            "cleanup.timer": TIMER,
            "cleanup.service": ONESHOT,
            "web.socket": SOCKET,
            "web.service": DAEMON,
            "api.service": DAEMON,
        }
    )
    assert plan.start == ("api.service", "cleanup.timer", "web.socket")


def test_a_timer_naming_its_unit_activates_that_unit() -> None:
    plan = plan_activation(
        {
            "nightly.timer": "[Timer]\nOnCalendar=daily\nUnit=report.service\n",
            "report.service": ONESHOT,
        }
    )
    assert plan.start == ("nightly.timer",)


def test_oneshots_count_as_well_once_they_succeeded() -> None:
    plan = plan_activation({"migrate.service": ONESHOT, "setup.service": KEPT_ONESHOT})
    assert plan.run_once == {"migrate.service"}
    done = UnitStatus("x", "inactive", "dead", "success", 0)
    failed = UnitStatus("x", "failed", "failed", "exit-code", 1)
    assert judge(done, run_once=True) is Verdict.WELL
    assert judge(done, run_once=False) is not Verdict.WELL
    assert judge(failed, run_once=True) is not Verdict.WELL
    assert judge(UnitStatus("x", "active", "running", "success"), run_once=False) is Verdict.WELL


RUNNING = UnitStatus("web", "active", "running", "success")
STARTING = UnitStatus("web", "activating", "start", "success")
EXITED = UnitStatus("web", "failed", "failed", "exit-code", 3)
RESTARTING = UnitStatus("web", "activating", "auto-restart", "exit-code", 1)


@pytest.mark.parametrize(
    ("status", "run_once", "verdict"),
    [
        (RUNNING, False, Verdict.WELL),
        (UnitStatus("web", "reloading", "reload", "success"), False, Verdict.WELL),
        (UnitStatus("web.socket", "active", "listening", "success"), False, Verdict.WELL),
        (STARTING, False, Verdict.SETTLING),
        (STARTING, True, Verdict.SETTLING),
        (UnitStatus("job", "deactivating", "stop", "success"), True, Verdict.SETTLING),
        (UnitStatus("job", "inactive", "dead", "success", 0), True, Verdict.WELL),
        (UnitStatus("web", "inactive", "dead", "success", 0), False, Verdict.FAILED),
        (UnitStatus("web", "deactivating", "stop-sigterm", "success"), False, Verdict.FAILED),
        (UnitStatus("job", "inactive", "dead", "exit-code", 1), True, Verdict.FAILED),
        (EXITED, False, Verdict.FAILED),
        (RESTARTING, False, Verdict.FAILED),
    ],
)
def test_judge_reads_a_state_as_systemd_means_it(
    status: UnitStatus, run_once: bool, verdict: Verdict
) -> None:
    assert judge(status, run_once=run_once) is verdict


class Script:
    """Statuses to report, one list per look; the last one repeats."""

    def __init__(self, *looks: UnitStatus) -> None:
        self.looks: Iterator[UnitStatus] = iter(looks)
        self.last = looks[-1]
        self.reads = 0

    def __call__(self, names: Sequence[str]) -> list[UnitStatus]:
        self.reads += 1
        self.last = next(self.looks, self.last)
        return [self.last]


def test_settle_waits_out_the_transitional_state_then_holds() -> None:
    clock, script, kept = FakeClock(), Script(STARTING, STARTING, RUNNING), []
    began = clock.now()

    settle(
        ["web"],
        script,
        clock=clock,
        hold=2,
        settle_timeout=5,
        poll=0.5,
        between=lambda: kept.append(1),
    )

    assert script.reads == 3 + 4, "two looks while starting, then the 2 s hold at 0.5 s"
    assert (clock.now() - began).total_seconds() == pytest.approx(3.0)
    assert len(kept) == script.reads - 1, "`between` runs before every sleep"


def test_a_unit_that_fails_during_the_hold_fails_with_the_one_message() -> None:
    clock, script = FakeClock(), Script(RUNNING, RUNNING, EXITED)

    with pytest.raises(UnitFailedError) as failed:
        settle(["web"], script, clock=clock, hold=10, poll=1, hint=lambda n: f"see {n}.log")

    what = "failed to start (stopped within 2.0 s of starting)"
    assert failed.value.message == unit_failure(EXITED, what, "see web.log").message
    assert failed.value.message == (
        "unit web failed to start (stopped within 2.0 s of starting): failed/failed, "
        "result exit-code, exit status 3; see web.log"
    )
    assert (failed.value.unit, failed.value.result, failed.value.exit_status) == (
        "web",
        "exit-code",
        3,
    )


def test_the_message_says_when_a_unit_that_just_started_stopped() -> None:
    with pytest.raises(UnitFailedError) as at_once:
        settle(["web"], Script(EXITED), clock=FakeClock())
    assert at_once.value.message.startswith("unit web failed to start (exited right after it")
    with pytest.raises(UnitFailedError) as later:
        settle(
            ["web"], Script(EXITED), clock=FakeClock(), what="is not running", just_started=False
        )
    assert later.value.message.startswith("unit web is not running: failed/failed")


def test_a_unit_still_starting_at_the_timeout_or_starting_again_fails() -> None:
    with pytest.raises(UnitFailedError, match="still activating after 2 s") as late:
        settle(["web"], Script(STARTING), clock=FakeClock(), settle_timeout=2, poll=0.5)
    assert late.value.result == "timeout"
    with pytest.raises(UnitFailedError, match="it restarted"):
        settle(["web"], Script(RUNNING, STARTING, RUNNING), clock=FakeClock(), hold=5, poll=1)
    with pytest.raises(UnitFailedError, match="auto-restart"):
        settle(["web"], Script(RESTARTING), clock=FakeClock(), settle_timeout=5)


def test_with_no_hold_and_no_timeout_settle_looks_once() -> None:
    script = Script(RUNNING)
    settle(["web"], script, clock=FakeClock())
    assert script.reads == 1
    settle([], script, clock=FakeClock())
    assert script.reads == 1
