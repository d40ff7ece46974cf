"""A service's health check given badly: `--health-check`, its thresholds, `--health-command`
and `--health-period`, hypothesis-driven and by hand.

Each refusal is one `error:` line, exit 2, no traceback, and every table exactly as it
was (tests.badinput.harness). What is refused is what engine/health_checks.py refuses.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck as Checks
from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.engine import health_checks
from flotilla.engine.records import HealthCheck, HealthCheckProtocol
from tests.badinput import strategies as s
from tests.badinput.harness import World, assert_refused, make_world

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[Checks.function_scoped_fixture, Checks.too_slow],
)

pytestmark = pytest.mark.usefixtures("daemons_never_start")

HTTP_CHECK = HealthCheck(HealthCheckProtocol.HTTP, 8080, "/health")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world("badhealth", tmp_path_factory.mktemp("badhealth"))


health_check_texts = st.one_of(
    st.sampled_from(
        [
            "",
            "HTTP",
            "HTTP:",
            "HTTP:/health",
            "HTTP:0/",
            "HTTP:65536/",
            "HTTP:80a/",
            "HTTP: 80/",
            "HTTP:80/a b",
            "HTTP:80/\t",
            "HTTP:80/\n",
            "HTTP:80/é",
            "HTTP:80/" + "a" * 1024,
            "TCP:80/",
            "TCP:80/health",
            "UDP:53",
            "ICMP:0",
            "http//80/",
            "HTTP:-1/",
            "HTTP:٨٠/",
        ]
    ),
    st.builds(
        lambda proto, rest: f"{proto}:{rest}", st.sampled_from(["TCP", "HTTP", "HTTPS"]), s.any_text
    ),
    s.any_text,
)


@EXAMPLES
@given(text=health_check_texts, command=st.sampled_from(["create", "update"]))
def test_bad_health_checks_are_refused(world: World, text: str, command: str) -> None:
    if not s.refused_by(health_checks.parse_health_check, text):
        return  # a good one: not this test's business
    name = "fresh" if command == "create" else world.service
    assert_refused(world, ["service", command, name, "--health-check", text], codes=(2,))


def _tuned(field: str) -> Any:
    def accept(text: str) -> object:
        return health_checks.health_check(replace(HTTP_CHECK, **{field: int(text)}))

    return accept


TUNING = {
    "--healthy-threshold": "healthy_threshold",
    "--unhealthy-threshold": "unhealthy_threshold",
    "--health-interval": "interval_seconds",
    "--health-check-timeout": "timeout_seconds",
}


@EXAMPLES
@given(
    option=st.sampled_from(sorted(TUNING)),
    value=st.one_of(st.integers(-5, 400).map(str), s.bad_numbers),
)
def test_thresholds_out_of_aws_ranges_are_refused(world: World, option: str, value: str) -> None:
    try:
        int(value)
    except ValueError:
        pass  # click refuses it as not an integer
    else:
        if not s.refused_by(_tuned(TUNING[option]), value):
            return
    args = ["service", "create", "fresh", "--health-check", "HTTP:8080/health", option, value]
    assert_refused(world, args, codes=(2,))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--healthy-threshold", "1"], "from 2 to 10"),
        (["--unhealthy-threshold", "11"], "from 2 to 10"),
        (["--health-interval", "4"], "from 5 to 300"),
        (["--health-check-timeout", "61"], "from 2 to 60"),
        (["--health-interval", "5", "--health-check-timeout", "5"], "not shorter than"),
    ],
)
def test_each_range_is_named_in_the_error(world: World, args: list[str], words: str) -> None:
    result = assert_refused(
        world, ["service", "create", "fresh", "--health-check", "HTTPS:443/", *args], codes=(2,)
    )
    assert words in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        # Tuning without a check to tune, on a service that has none stored.
        (["update", "{}", "--health-interval", "30"], "give it too"),
        (["create", "fresh", "--health-check-timeout", "3"], "give it too"),
        # A command probe is for services without a load balancer; one probe at a time.
        (
            ["create", "fresh", "--load-balancer", "classic:a-elb", "--health-command", "true"],
            "without one",
        ),
        (
            ["update", "{}", "--load-balancer", "classic:a-elb", "--health-command", "true"],
            "without one",
        ),
        (["create", "fresh", "--health-check", "TCP:80", "--health-command", "true"], "both"),
        # A target group's targets take HTTP: no TCP check.
        (
            [
                "create",
                "fresh",
                "--load-balancer",
                "target_group:arn:aws:elasticloadbalancing:eu-west-1:123456789012:"
                "targetgroup/tg/0123456789abcdef",
                "--health-check",
                "TCP:80",
            ],
            "not TCP",
        ),
        (["create", "fresh", "--health-command", ""], "1 to 1024"),
        (["create", "fresh", "--health-command", "   "], "1 to 1024"),
        (["create", "fresh", "--health-command", "true\nreboot"], "control character"),
        (["create", "fresh", "--health-command", "x" * 1025], "1 to 1024"),
        (["create", "fresh", "--health-period", "-1"], "from 0 to 3600"),
        (["update", "{}", "--health-period", "3601"], "from 0 to 3600"),
        (
            [
                "create",
                "fresh",
                "--health-check",
                "TCP:80",
                "--health-period",
                "61",
                "--health-timeout",
                "60",
            ],
            "longer than the health timeout",
        ),
    ],
)
def test_inconsistent_health_settings_are_refused(
    world: World, args: list[str], words: str
) -> None:
    args = [arg.replace("{}", world.service) for arg in args]
    result = assert_refused(world, ["service", *args], codes=(2,))
    assert words in result.stderr


def test_a_health_command_is_never_echoed_in_its_error(world: World) -> None:
    secret = "curl -H 'token: s3cr3t-probe-token' http://x"
    result = assert_refused(
        world, ["service", "create", "fresh", "--health-command", secret + "\n"], codes=(2,)
    )
    assert "s3cr3t-probe-token" not in result.stderr
