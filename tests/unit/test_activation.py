"""Which units a deploy starts, and when a unit counts as running well."""

from flotilla.engine.activation import is_well, plan_activation
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
    assert is_well(done, run_once=True)
    assert not is_well(done, run_once=False)
    assert not is_well(failed, run_once=True)
    assert is_well(UnitStatus("x", "active", "running", "success"), run_once=False)
