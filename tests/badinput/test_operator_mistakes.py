"""The mistakes a new operator makes, found by driving the CLI as one would (issue 17):
settings that do not parse, names that do not exist, weights that run nothing, a way back
that is not there, unit files systemd would refuse or ignore. Each is refused the way
`cli.main` promises: one `error:` line naming what is wrong and where it came from, exit 2
for bad input (1 for what else failed), no traceback, and every table as it was.
"""

from __future__ import annotations

import tempfile
import types
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flotilla.cli import settings as setting_rules
from flotilla.engine import validation
from flotilla.engine.errors import ValidationError
from tests.badinput import harness
from tests.badinput import strategies as s
from tests.badinput.harness import World, assert_refused, make_world
from tests.support.aws import REGION

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


pytestmark = pytest.mark.usefixtures("daemons_never_start")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world("mistakes", tmp_path_factory.mktemp("mistakes"))


def refused_as_endpoint(text: str) -> bool:
    return s.refused_by(lambda v: setting_rules.endpoint(v, "--endpoint-url"), text)


# --- settings ---------------------------------------------------------------------------

ENV_ONLY = ["--env", "mistakes"]


@EXAMPLES
@given(
    url=st.one_of(
        st.sampled_from(
            [
                "127.0.0.1:5055",
                "http://127.0.0.1:notaport",
                "http://127.0.0.1:99999",
                "http://127.0.0.1:0",
                "http://",
                "ftp://127.0.0.1:21",
                "localhost",
                " http://127.0.0.1:5000",
                "http://127.0.0.1:5000\n",
                "http://[::1",
                "http://a b:80",
                "\r",  # blanks only: "set but empty" when it comes from a variable
            ]
        ),
        st.text(s.ARGV_CHARACTERS, min_size=1, max_size=40),
    ).filter(lambda u: not u.startswith("-") and refused_as_endpoint(u)),
    where=st.sampled_from(["--endpoint-url", "FLOTILLA_ENDPOINT_URL", "AWS_ENDPOINT_URL"]),
)
def test_an_endpoint_url_that_is_not_one(world: World, url: str, where: str) -> None:
    if where == "--endpoint-url":
        result = assert_refused(world, ["service", "list", "--endpoint-url", url], codes=(2,))
    else:
        if "\x00" in url:
            return  # an environment cannot hold it
        result = assert_refused(world, ["service", "list"], codes=(2,), variables={where: url})
        if not url.strip():  # a variable of blanks only (e.g. "\r") is one set but empty
            assert f"{where} is set but empty" in result.stderr
            return
    assert "invalid endpoint URL" in result.stderr
    assert f"(from {where})" in result.stderr


def test_an_endpoint_variable_set_but_empty(world: World) -> None:
    result = assert_refused(
        world, ["service", "list"], codes=(2,), variables={"FLOTILLA_ENDPOINT_URL": ""}
    )
    assert "FLOTILLA_ENDPOINT_URL is set but empty" in result.stderr


@EXAMPLES
@given(
    region=st.one_of(
        st.sampled_from(["bad region", "us_east_1", "-us-east-1", "eu-west-1-", "x" * 64, "é"]),
        st.text(s.ARGV_CHARACTERS, min_size=1, max_size=30),
    ).filter(
        lambda r: (
            r.strip() == r
            and not r.startswith("-")
            and s.refused_by(lambda v: setting_rules.region_name(v, "--region"), r)
        )
    ),
    where=st.sampled_from(["--region", "FLOTILLA_REGION", "AWS_REGION"]),
)
def test_a_region_botocore_would_refuse(world: World, region: str, where: str) -> None:
    if where == "--region":
        result = assert_refused(
            world, ["service", "list", *ENV_ONLY, "--region", region], codes=(2,), aws=False
        )
    else:
        if "\x00" in region:
            return
        variables: dict[str, str | None] = {"FLOTILLA_REGION": None, where: region}
        result = assert_refused(
            world, ["service", "list", *ENV_ONLY], codes=(2,), aws=False, variables=variables
        )
    assert "invalid AWS region" in result.stderr
    assert f"(from {where})" in result.stderr


@pytest.mark.parametrize("value", ["Prod", "a b", "prod!", "x" * 30])
def test_an_environment_name_from_the_variable(world: World, value: str) -> None:
    result = assert_refused(
        world,
        ["service", "list", "--region", REGION],
        codes=(2,),
        aws=False,
        variables={"FLOTILLA_ENV": value},
    )
    assert "(from FLOTILLA_ENV)" in result.stderr


@pytest.fixture
def fresh_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A boto3 session per command, as the console script makes (the harness shares one,
    which reads the config files only once)."""
    monkeypatch.setattr(harness, "_SHARED_SESSIONS", types.SimpleNamespace(Session=boto3.Session))


@pytest.mark.parametrize(
    ("args", "variables", "message"),
    [
        (["--profile", "nosuch"], {}, "profile 'nosuch' (from --profile) is not configured"),
        ([], {"AWS_PROFILE": "nosuch"}, "profile 'nosuch' (from AWS_PROFILE) is not configured"),
    ],
)
def test_aws_settings_botocore_refuses(
    world: World,
    args: list[str],
    variables: dict[str, str],
    message: str,
    tmp_path: Path,
    fresh_sessions: None,
) -> None:
    config = tmp_path / "config"
    config.write_text("[default]\n")
    result = assert_refused(
        world,
        ["service", "list", *args],
        codes=(1,),
        variables={"AWS_CONFIG_FILE": str(config), **variables},
    )
    assert message in result.stderr


def test_a_config_file_botocore_cannot_parse(
    world: World, tmp_path: Path, fresh_sessions: None
) -> None:
    config = tmp_path / "config"
    config.write_text("[default\nregion=")
    result = assert_refused(
        world, ["service", "list"], codes=(1,), variables={"AWS_CONFIG_FILE": str(config)}
    )
    assert "Unable to parse config file" in result.stderr


# --- names that do not exist -------------------------------------------------------------


def test_an_agent_for_a_service_that_does_not_exist(world: World) -> None:
    result = assert_refused(
        world, ["agent", "--service", "nosuch", "--instance-id", "i-9"], codes=(1,)
    )
    assert "service 'nosuch' does not exist" in result.stderr


def test_access_to_a_service_that_does_not_exist(world: World) -> None:
    key = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJv8cXsh5UZ3tbqWtKu/Tm4n3N8oBAk3jJ1v8JVo/2Z5 a\n"
    result = assert_refused(
        world, ["user", "add", "alice", "--key", "-", "--service", "apj"], codes=(1,), stdin=key
    )
    assert "service 'apj' does not exist" in result.stderr


@pytest.mark.parametrize("command", [["rollout", "undo"], ["rollout", "undo", "{}", "--wait"]])
def test_undo_of_a_service_that_does_not_exist(world: World, command: list[str]) -> None:
    args = [part.replace("{}", "nosuch") for part in command]
    if "nosuch" not in args:
        args.append("nosuch")
    assert "does not exist" in assert_refused(world, args, codes=(1,)).stderr


@EXAMPLES
@given(name=s.bad_service_names)
def test_undo_refuses_a_bad_service_name(world: World, name: str) -> None:
    assert "invalid service name" in assert_refused(world, ["rollout", "undo", name]).stderr


# --- weights and the way back ------------------------------------------------------------


def test_weights_that_run_nothing_need_stop_all(world: World) -> None:
    result = assert_refused(world, ["weights", "api", "v1=0"], codes=(2,))
    assert "would have weight 0" in result.stderr
    assert "--stop-all" in result.stderr
    result = assert_refused(world, ["weights", "api", "v1=7", "--stop-all"], codes=(2,))
    assert "--stop-all is for weights that are all 0" in result.stderr


@EXAMPLES
@given(steps=s.bad_numbers)
def test_undo_with_bad_steps(world: World, steps: str) -> None:
    number = validation.whole_number(steps)
    if number is not None and 1 <= number <= 100:
        return
    result = assert_refused(world, ["rollout", "undo", "api", "--steps", steps], codes=(2,))
    assert "invalid --steps" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--to", "nosuch"], 2, "has no revision labelled 'nosuch'"),
        (["--to", "v1", "--steps", "2"], 2, "give --to REVISION or --steps N, not both"),
        ([], 1, "cannot undo api's weights: its history holds no earlier weights"),
        (["--steps", "3"], 1, "cannot undo api's weights 3 steps back"),
        (["--reason", "two\nlines"], 2, "invalid --reason"),
        (["--timeout", "nan", "--wait"], 2, "invalid --timeout"),
    ],
)
def test_undo_that_cannot_be_done(world: World, args: list[str], code: int, message: str) -> None:
    result = assert_refused(world, ["rollout", "undo", "api", *args], codes=(code,))
    assert message in result.stderr


@pytest.mark.parametrize(
    "option", [["--interval", "0"], ["--timeout", "-1"], ["--interval", "inf"]]
)
def test_weights_wait_with_bad_times(world: World, option: list[str]) -> None:
    assert_refused(world, ["weights", "api", "v1=50", "--wait", *option], codes=(2,))


# --- revisions -----------------------------------------------------------------------------

UNITS_SYSTEMD_REFUSES = [
    ("web.service", "[Service]\nType=simple\nRestart=always\n"),
    ("web.service", "[Service]\nExecStartt=/usr/bin/web\n"),
    ("web.service", "[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n"),
    ("web.service", "[Service]\nExecStart=bin/web\n"),
    ("tick.timer", "[Timer]\nPersistent=true\n"),
    ("web.socket", "[Socket]\nAccept=no\n"),
]
UNITS_SYSTEMD_IGNORES = [
    ("web.service", "[Service]\nExecStartt=/usr/bin/web\nExecStart=/usr/bin/web\n"),
    ("web.service", "[Service]\nExecStart=/usr/bin/web\nRestartt=always\n"),
    ("web.service", "[Service]\nExecStart=/usr/bin/web\n[Servise]\nUser=web\n"),
    ("web.service", "[Unit]\nDescriptin=typo\n[Service]\nExecStart=/usr/bin/web\n"),
]


def _add(world: World, files: list[tuple[str, str]], *options: str) -> Any:
    with tempfile.TemporaryDirectory() as root:
        for name, text in files:
            (Path(root) / name).write_text(text)
        return assert_refused(world, ["revision", "add", "api", root, *options], codes=(2,))


@pytest.mark.parametrize(("name", "text"), UNITS_SYSTEMD_REFUSES)
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_unit_systemd_would_refuse_is_never_added(
    world: World, name: str, text: str, force: list[str]
) -> None:
    files = [(name, text)]
    if not name.endswith(".service"):
        files.append(("web.service", s.GOOD_UNIT.decode()))
    result = _add(world, files, "--label", "r1", *force)
    assert "--force cannot help" in result.stderr


@pytest.mark.parametrize(("name", "text"), UNITS_SYSTEMD_IGNORES)
def test_a_unit_systemd_would_partly_ignore_needs_force(world: World, name: str, text: str) -> None:
    result = _add(world, [(name, text)], "--label", "i1")
    assert "--force" in result.stderr
    assert "--force cannot help" not in result.stderr


@pytest.mark.parametrize("label", ["v1", "a" * 64, "0123456789abcdef" * 4])
def test_a_label_that_would_not_name_one_revision(world: World, label: str) -> None:
    result = _add(
        world, [("web.service", "[Service]\nExecStart=/usr/bin/other\n")], "--label", label
    )
    assert "already has a revision labelled" in result.stderr or "64 hex digits" in result.stderr


GOOD = ("web.service", "[Service]\nExecStart=/usr/bin/web\n")
BAD_HOOKS = [
    ([("hooks/deploy", "true\n")], "unknown hook hooks/deploy"),
    ([("hooks/validate", "\n")], "hook validate is empty"),
    ([("hooks/validate", "#!python\n")], "must name the interpreter by absolute path"),
    ([("hooks/validate", "true\n"), ("hooks/timeouts", "validate=0\n")], "invalid timeout 0"),
    ([("hooks/validate", "true\n"), ("hooks/timeouts", "validate=soon\n")], "HOOK=SECONDS"),
    ([("hooks/timeouts", "validate=5\n")], "there is no hooks/validate"),
    (
        [
            ("hooks/validate", "true\n"),
            ("db.service", "[Service]\nExecStart=/usr/bin/db\n"),
            ("db.env", "PORT=5432\n"),
            ("web.env", "PORT=80\n"),
        ],
        "PORT is set differently in db.service and web.service",
    ),
]


@pytest.mark.parametrize(("files", "message"), BAD_HOOKS)
def test_a_bad_hook_is_refused_before_anything_is_stored(
    world: World, files: list[tuple[str, str]], message: str
) -> None:
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "hooks").mkdir()
        for name, text in [GOOD, *files]:
            (Path(root) / name).write_text(text)
        result = assert_refused(
            world, ["revision", "add", "api", root, "--label", "h1"], codes=(2,)
        )
    assert message in result.stderr
    assert "5432" not in result.stderr


def test_a_wrong_setting_is_found_before_any_file_is_read(world: World) -> None:
    # Settings are read before the revision's files: one line about the setting.
    result = assert_refused(
        world,
        ["revision", "add", "api", "/nonexistent", "--endpoint-url", "localhost:1"],
        codes=(2,),
    )
    assert "endpoint URL" in result.stderr or "does not exist" in result.stderr


def test_refused_strategies_agree_with_the_validators() -> None:
    with pytest.raises(ValidationError):
        setting_rules.endpoint("127.0.0.1:5055", "--endpoint-url")
    assert setting_rules.endpoint("http://127.0.0.1:5055", "--endpoint-url")
