"""The mistakes an operator makes steering a rollout (issue 16): a step plan that does not
end at 100 %, a bake time or deadline that is not a time (nan, -1, 1.5m), an alarm that
does not exist in CloudWatch, a webhook URL that is not http(s), a promotion with nothing
rolling (or a paused service), a plan with weights `flotilla weights` would refuse. Each
is refused as `cli.main` promises: one `error:` line, exit 2, no traceback, every table as
it was.
"""

from __future__ import annotations

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flotilla.engine import validation
from flotilla.engine.clock import SystemClock
from flotilla.scheduler.pass_ import PassSettings, SchedulerPass
from tests.badinput import strategies as s
from tests.badinput.harness import World, assert_refused, make_world
from tests.support.aws import REGION

EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ALARM = "api-errors"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """`api` with its rollout complete (a scheduler pass took up its weights), and one
    CloudWatch alarm that exists."""
    world = make_world("rollctl", tmp_path_factory.mktemp("rollctl"))
    SchedulerPass(world.wiring().store, SystemClock(), PassSettings(), lambda: 1).run()
    boto3.client("cloudwatch", region_name=REGION).put_metric_alarm(
        AlarmName=ALARM,
        MetricName="5xx",
        Namespace="api",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    return world


def refused(world: World, *args: str) -> str:
    result = assert_refused(world, list(args), codes=(2,))
    return result.stderr


# --- step plans and times --------------------------------------------------------------


@pytest.mark.parametrize("steps", ["1,25%", "1:5m,pause", "50%", "1:5m,25%:10m,pause", "3,5"])
@pytest.mark.parametrize("command", ["create", "update"])
def test_a_step_plan_must_end_at_100_percent(world: World, steps: str, command: str) -> None:
    name = "other" if command == "create" else "api"
    assert "not 100%" in refused(world, "service", command, name, "--steps", steps)


amounts = st.one_of(
    st.integers(1, 500).map(str), st.integers(1, 99).map(lambda n: f"{n}%"), st.just("pause")
)


@EXAMPLES
@given(plan=st.lists(amounts, min_size=1, max_size=6))
def test_any_step_plan_not_ending_at_100_percent(world: World, plan: list[str]) -> None:
    text = ",".join(plan)
    stderr = refused(world, "service", "update", "api", "--steps", text)
    assert stderr.startswith("error: invalid step")


@pytest.mark.parametrize("bake", ["nan", "NaN", "inf", "-1", "1.5m", "5 minutes", "", "1d"])
def test_a_bake_time_that_is_not_a_time(world: World, bake: str) -> None:
    stderr = refused(world, "service", "update", "api", "--steps", f"1:{bake},100%")
    assert "is not a time" in stderr or "invalid step" in stderr
    stderr = refused(world, "service", "create", "other", "--steps", f"1:{bake},100%")
    assert "is not a time" in stderr or "invalid step" in stderr


@pytest.mark.parametrize("deadline", ["nan", "-5m", "10 min", "25h", "0.5"])
def test_a_progress_deadline_that_is_not_a_time(world: World, deadline: str) -> None:
    stderr = refused(world, "service", "update", "api", "--progress-deadline", deadline)
    assert "invalid --progress-deadline" in stderr


@pytest.mark.parametrize("pace", ["0", "-1", "150%", "fast", "0%"])
def test_a_revert_pace_that_is_not_one(world: World, pace: str) -> None:
    assert "invalid max_in_flight" in refused(
        world, "service", "update", "api", "--revert-max-in-flight", pace
    )


# --- gates ------------------------------------------------------------------------------


def test_an_alarm_that_does_not_exist(world: World) -> None:
    stderr = refused(world, "service", "update", "api", "--alarm", "api-latency")
    assert "alarm 'api-latency' does not exist in CloudWatch" in stderr
    stderr = refused(world, "service", "update", "api", "--alarm", ALARM, "--alarm", "nope")
    assert "'nope' does not exist" in stderr
    assert ALARM not in stderr
    stderr = refused(world, "service", "create", "other", "--alarm", "nope")
    assert "'nope' does not exist" in stderr


def test_alarm_names_cloudwatch_would_refuse(world: World) -> None:
    assert "invalid alarm name" in refused(world, "service", "update", "api", "--alarm", " x")
    assert "named twice" in refused(
        world, "service", "update", "api", "--alarm", ALARM, "--alarm", ALARM
    )
    assert "not both" in refused(world, "service", "update", "api", "--alarm", ALARM, "--no-alarms")


def test_an_alarm_that_exists_is_taken(world: World) -> None:
    world.ok("service", "update", "api", "--alarm", ALARM)
    assert ALARM in world.ok("service", "show", "api")
    world.ok("service", "update", "api", "--no-alarms")
    world.baseline = None  # changed on purpose


@pytest.mark.parametrize(
    "url",
    [
        "ftp://ci.example.com/confirm",
        "ci.example.com/confirm",
        "file:///etc/passwd",
        "https://",
        "https://user:secret@ci.example.com/confirm",
        "http://169.254.169.254/latest/meta-data",
        "https://ci.example.com:99999/",
        "javascript:alert(1)",
    ],
)
def test_a_webhook_url_that_is_not_http(world: World, url: str) -> None:
    assert "invalid webhook URL" in refused(world, "service", "update", "api", "--webhook", url)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:s3cr3t-hook@ci.example.com/confirm",
        "https://ci.example.com/confirm?token=s3cr3t-hook",
        "https://ci.example.com/confirm#s3cr3t-hook",
    ],
)
def test_a_webhook_url_carrying_a_secret_is_refused_without_saying_it(
    world: World, url: str
) -> None:
    said = refused(world, "service", "update", "api", "--webhook", url)
    assert "'https://ci.example.com/confirm': no user, password, query or fragment" in said
    assert "s3cr3t-hook" not in said


@EXAMPLES
@given(
    url=st.text(s.ARGV_CHARACTERS, min_size=1, max_size=60).filter(
        lambda u: not u.startswith("-") and s.refused_by(validation.webhook_url, u)
    )
)
def test_any_webhook_url_refused_is_refused_cleanly(world: World, url: str) -> None:
    assert "invalid webhook URL" in refused(world, "service", "update", "api", "--webhook", url)


# --- promote ------------------------------------------------------------------------------


def test_promote_with_nothing_rolling(world: World) -> None:
    stderr = refused(world, "rollout", "promote", "api")
    assert "cannot promote api: no rollout is rolling (its last one is complete)" in stderr
    assert "flotilla weights api" in stderr
    assert "cannot promote api" in refused(world, "rollout", "promote", "api", "--full")


def test_promote_a_paused_service(world: World) -> None:
    world.ok("rollout", "pause", "api")
    world.baseline = None
    try:
        stderr = refused(world, "rollout", "promote", "api")
        assert "it is paused" in stderr
        assert "flotilla rollout resume api" in stderr
    finally:
        world.ok("rollout", "resume", "api")
        world.baseline = None


# --- plan ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["v1=lots"], "invalid weight"),
        (["v1=-1"], "invalid weight"),
        (["v9=5"], "no revision labelled 'v9'"),
        (["v1"], "REVISION=WEIGHT"),
        (["=5"], "REVISION=WEIGHT"),
        ([], "give at least one REVISION=WEIGHT"),
        (["v1=5", "v1=6"], "named twice"),
        (["v1=0"], "would have weight 0"),
    ],
)
def test_plan_with_bad_weights(world: World, pairs: list[str], message: str) -> None:
    assert message in refused(world, "rollout", "plan", "api", *pairs)


@EXAMPLES
@given(weight=s.bad_numbers)
def test_plan_with_any_bad_weight(world: World, weight: str) -> None:
    if validation.whole_number(weight) is not None and 0 < int(weight) <= validation.MAX_WEIGHT:
        return
    stderr = refused(world, "rollout", "plan", "api", f"v1={weight}")
    assert "invalid weight" in stderr or "would have weight 0" in stderr
