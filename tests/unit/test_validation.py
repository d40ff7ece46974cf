"""Validators accept what systemd, POSIX and DynamoDB accept, and explain every refusal."""

from __future__ import annotations

import dataclasses
import re
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flotilla.adapters.memory_store import MemoryStateStore
from flotilla.cli.history_command import parse_limit
from flotilla.cli.scheduler_command import parse_shard
from flotilla.engine import validation
from flotilla.engine.clock import FakeClock
from flotilla.engine.errors import ValidationError
from flotilla.engine.records import LoadBalancerKind, LoadBalancerRef, RolloutPolicy, Service
from flotilla.engine.updates import modify_service, set_weights

good_service_names = st.from_regex(r"\A[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?\Z")
env_names = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,30}\Z")


@given(good_service_names)
def test_every_well_formed_service_name_is_accepted(name: str) -> None:
    assert validation.service_name(name) == name


@given(st.text(max_size=40))
def test_a_service_name_is_accepted_only_if_it_matches_the_rule(name: str) -> None:
    ok = re.fullmatch(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?", name) is not None
    if ok:
        assert validation.service_name(name) == name
    else:
        with pytest.raises(ValidationError, match="invalid service name"):
            validation.service_name(name)


@pytest.mark.parametrize("name", ["", "API", "-api", "api-", "a" * 33, "api;rm -rf /", "ap i", 7])
def test_bad_service_names_say_what_is_allowed(name: object) -> None:
    with pytest.raises(ValidationError, match="lowercase letters, digits and hyphens"):
        validation.service_name(name)


@pytest.mark.parametrize(
    "name", ["web.service", "db-1.socket", "cleanup.timer", "worker@.service", "a:b_c.service"]
)
def test_systemd_unit_names_of_the_three_kinds_are_accepted(name: str) -> None:
    assert validation.unit_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("web.mount", "only .service, .socket and"),
        ("web", "only .service"),
        (".service", "systemd allows"),
        ("we b.service", "systemd allows"),
        ("web$(id).service", "systemd allows"),
        ("a@b@c.service", "systemd allows"),
        ("x" * 200 + ".service", "at most 200"),
    ],
)
def test_bad_unit_names_are_refused_with_the_rule(name: str, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        validation.unit_name(name)


@given(env_names)
def test_posix_variable_names_are_accepted(name: str) -> None:
    assert validation.environment_variables("web.service", {name: "v"}) == {name: "v"}


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "É", "A=B"])
def test_non_posix_variable_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="POSIX"):
        validation.environment_variables("web.service", {name: "v"})


def test_a_refused_value_is_never_echoed() -> None:
    secret = "hunter2\x00-very-secret"
    with pytest.raises(ValidationError) as raised:
        validation.environment_variables("web.service", {"DB_PASSWORD": secret})
    assert "hunter2" not in str(raised.value)
    assert "DB_PASSWORD" in str(raised.value)


@given(st.integers(min_value=0, max_value=validation.MAX_WEIGHT))
def test_whole_weights_in_range_are_accepted(weight: int) -> None:
    assert validation.weight("v1", weight) == weight
    assert validation.weight("v1", str(weight)) == weight


@pytest.mark.parametrize("weight", [-1, 1.5, "ten", True, None, "", "٣", 10**7])
def test_bad_weights_are_refused(weight: object) -> None:
    with pytest.raises(ValidationError, match="invalid weight"):
        validation.weight("v1", weight)


@pytest.mark.parametrize("value", ["1", "25", "25%", "100%", "1%", 3])
def test_max_in_flight_takes_a_count_or_a_share(value: object) -> None:
    assert validation.max_in_flight(value) == str(value)


@pytest.mark.parametrize("value", ["0", "0%", "101%", "-1", "x", "", "1.5", True])
def test_bad_max_in_flight_is_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="max_in_flight"):
        validation.max_in_flight(value)


def test_unit_files_must_look_like_unit_files() -> None:
    good = (
        "# comment\n[Unit]\nAfter=docker.service\n\n"
        "[Service]\nExecStart=/bin/sh -c \\\n  'echo hi'\n"
    )
    assert validation.unit_file("web.service", good) == good
    for text, message in [
        ("ExecStart=/bin/true\n", "before any \\[Section\\]"),
        ("[Service\nExecStart=x\n", "malformed section header"),
        ("[Service]\njust words\n", "expected 'Key=Value'"),
        ("", "has no \\[Section\\]"),
        (b"\xff\xfe[Service]", "not UTF-8"),
        ("[Service]\nA=\x00\n", "NUL byte"),
    ]:
        with pytest.raises(ValidationError, match=message):
            validation.unit_file("web.service", text)


@given(st.binary(max_size=200))
def test_binary_garbage_never_crashes_the_unit_validator(data: bytes) -> None:
    try:
        accepted = validation.unit_file("web.service", data)
    except ValidationError as refused:
        message = refused.message
    else:
        message = "accepted" if "[" in accepted else "accepted without a section"
    assert message == "accepted" or message.startswith("unit web.service")


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        (LoadBalancerRef(LoadBalancerKind.CLASSIC, "api-elb"), True),
        (LoadBalancerRef(LoadBalancerKind.CLASSIC, "api_elb"), False),
        (
            LoadBalancerRef(
                LoadBalancerKind.TARGET_GROUP,
                "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api/0123456789abcdef",
            ),
            True,
        ),
        (LoadBalancerRef(LoadBalancerKind.TARGET_GROUP, "api"), False),
    ],
)
def test_load_balancer_references(ref: LoadBalancerRef, ok: bool) -> None:
    if ok:
        assert validation.load_balancer(ref) == ref
    else:
        with pytest.raises(ValidationError):
            validation.load_balancer(ref)


def test_rollout_policy_slots_from_a_count_or_a_share() -> None:
    assert RolloutPolicy(max_in_flight="2").slots(10) == 2
    assert RolloutPolicy(max_in_flight="25%").slots(10) == 2
    assert RolloutPolicy(max_in_flight="25%").slots(2) == 1  # never zero
    assert RolloutPolicy(max_in_flight="100%").slots(7) == 7


def test_an_invalid_change_stores_nothing() -> None:
    store = MemoryStateStore(FakeClock())
    before = store.create_service(Service("api", weights={"v1": 100}))
    snapshot = store.items()
    with pytest.raises(ValidationError):
        set_weights(store, "api", {"v2": -5})
    with pytest.raises(ValidationError):
        modify_service(store, "api", lambda s: dataclasses.replace(s, rollout=RolloutPolicy("0")))
    assert store.get_service("api") == before
    assert store.items() == snapshot


def test_shell_metacharacters_never_pass_as_names() -> None:
    for char in string.punctuation.replace("-", "").replace("_", ""):
        with pytest.raises(ValidationError):
            validation.service_name(f"api{char}x")


@pytest.mark.parametrize(
    ("validator", "value"),
    [
        (validation.service_name, "api\n"),
        (validation.environment_name, "prod\n"),
        (validation.unit_name, "web\n.service"),
        (validation.revision_label, "v2\n"),
        (lambda name: validation.environment_variables("web.service", {name: "v"}), "PORT\n"),
        (
            lambda name: validation.load_balancer(LoadBalancerRef(LoadBalancerKind.CLASSIC, name)),
            "api-elb\n",
        ),
        (
            lambda name: validation.load_balancer(
                LoadBalancerRef(LoadBalancerKind.TARGET_GROUP, name)
            ),
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api/0123456789abcdef\n",
        ),
    ],
)
def test_a_trailing_newline_is_never_accepted(validator: Any, value: str) -> None:
    # `re.match` with a pattern ending in `$` accepts "api\n": every pattern is fullmatched.
    with pytest.raises(ValidationError):
        validator(value)
    validator(value.replace("\n", ""))  # the same value without the newline passes
    # max_in_flight strips surrounding blanks on purpose and returns the stripped text.
    assert validation.max_in_flight("25%\n") == "25%"


@given(good_service_names, st.sampled_from(["\n", "\r", "\r\n", "\x00", " ", "\t"]))
def test_a_good_name_with_a_control_character_after_it_is_refused(name: str, tail: str) -> None:
    with pytest.raises(ValidationError, match="invalid service name"):
        validation.service_name(name + tail)


def test_a_refused_weight_shows_the_revision_name_escaped() -> None:
    # `flotilla weights api $'\e[2J=-1'` must not clear the operator's terminal.
    with pytest.raises(ValidationError) as raised:
        validation.weight("\x1b[2J", "-1")
    assert "\x1b" not in raised.value.message
    assert "'\\x1b[2J'" in raised.value.message


@pytest.mark.parametrize("text", ["¹", "٣", "1²", "", " ", "-1", "1.0", "0x10"])
def test_a_whole_number_is_written_in_ascii_digits_only(text: str) -> None:
    assert validation.whole_number(text) is None


def test_a_whole_number_may_have_spaces_around_it() -> None:
    assert validation.whole_number(" 42 ") == 42


@pytest.mark.parametrize("text", ["¹", "0/¹", "¹/2"])
def test_limits_and_shards_in_other_digits_are_one_line_errors(text: str) -> None:
    with pytest.raises(ValidationError, match="--limit"):
        parse_limit(text)
    with pytest.raises(ValidationError, match="--shard"):
        parse_shard(text)
