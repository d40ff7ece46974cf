"""Every `flotilla` command given malformed arguments and files, hypothesis-driven.

Each refusal must be what `cli.main` promises: exit 2 for bad input (1 for anything else
that failed), one `error:` line, no traceback, nothing on stdout, and a full scan of
every table identical before and after. Commands run in-process (tests.badinput.harness)
so that a few hundred examples take seconds.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flotilla.cli import revision_sources
from flotilla.cli.service_commands import parse_load_balancer
from flotilla.engine import validation
from flotilla.engine.errors import ValidationError
from tests.badinput import strategies as s
from tests.badinput.harness import (
    World,
    assert_clean_failure,
    assert_refused,
    make_world,
)

EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW = settings(EXAMPLES, max_examples=30)


pytestmark = pytest.mark.usefixtures("daemons_never_start")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world("badargs", tmp_path_factory.mktemp("badargs"))


# --- names -----------------------------------------------------------------------------


SERVICE_NAME_COMMANDS = [
    ["service", "create"],
    ["service", "update", "{}", "--settle", "3"],
    ["service", "show"],
    ["service", "delete"],
    ["service", "provision", "{}", "--dry-run"],
    ["revision", "list"],
    ["revision", "show", "{}", "v1"],
    ["weights", "{}", "v1=5"],
    ["rollout", "status"],
    ["rollout", "watch", "{}", "--timeout", "0"],
    ["rollout", "pause"],
    ["rollout", "resume"],
    ["rollout", "revert"],
    ["history"],
    ["trace", "rollout"],
]


def _with_name(template: list[str], name: str) -> list[str]:
    if "{}" in template:
        return [name if part == "{}" else part for part in template]
    return [*template, name]


@pytest.mark.parametrize("command", SERVICE_NAME_COMMANDS, ids=" ".join)
@settings(EXAMPLES, max_examples=20)  # x 15 commands
@given(name=s.bad_service_names)
def test_a_bad_service_name_is_refused_by_every_command(
    world: World, command: list[str], name: str
) -> None:
    result = assert_refused(world, _with_name(command, name), codes=(2,))
    assert "invalid service name" in result.stderr


@pytest.mark.parametrize(
    "command", [c for c in SERVICE_NAME_COMMANDS if c[:2] != ["service", "create"]], ids=" ".join
)
def test_an_unknown_service_is_not_found(world: World, command: list[str]) -> None:
    result = assert_refused(world, _with_name(command, "nosuch"), codes=(1,))
    assert "does not exist" in result.stderr


@FEW
@given(name=s.bad_environment_names)
def test_a_bad_environment_name_is_refused(world: World, name: str) -> None:
    for command in (["service", "list"], ["service", "show", "api"], ["history", "api"]):
        args = [*command, "--env", name, "--region", "us-east-1"]
        result = assert_refused(world, args, codes=(2,), aws=False)
        assert "invalid environment name" in result.stderr


@pytest.mark.parametrize("name", ["--help", "-h"])
def test_help_looking_names_print_help_and_change_nothing(world: World, name: str) -> None:
    before = world.snapshot()
    result = world.run("service", "show", name)
    assert result.exception is None
    assert result.code == 0
    assert world.snapshot() == before


@pytest.mark.parametrize("name", ["-x", "-api", "--api"])
def test_option_looking_names_are_usage_errors(world: World, name: str) -> None:
    assert_refused(world, ["service", "show", name], codes=(2,))


# --- service settings ----------------------------------------------------------------


def _integer_setting(check: Any) -> Any:
    """How click (int()) and then the validator take an integer option."""

    def accept(text: str) -> object:
        try:
            number = int(text)
        except ValueError as exc:
            raise ValidationError("not an integer") from exc
        return check(number)

    return accept


SETTINGS = {
    "--drain-timeout": _integer_setting(lambda n: validation.timeout_seconds("t", n)),
    "--health-timeout": _integer_setting(lambda n: validation.timeout_seconds("t", n)),
    "--settle": _integer_setting(lambda n: validation.timeout_seconds("t", n)),
    "--max-failures": _integer_setting(lambda n: validation.non_negative("n", n)),
    "--max-in-flight": validation.max_in_flight,
}


@EXAMPLES
@given(
    option=st.sampled_from(sorted(SETTINGS)),
    value=s.bad_numbers,
    command=st.sampled_from(["create", "update"]),
)
def test_bad_service_settings_are_refused(
    world: World, option: str, value: str, command: str
) -> None:
    if not s.refused_by(SETTINGS[option], value):
        return  # a good value: not this test's business
    name = "fresh" if command == "create" else "api"
    assert_refused(world, ["service", command, name, option, value], codes=(2,))


@EXAMPLES
@given(value=s.any_text)
def test_bad_load_balancers_are_refused(world: World, value: str) -> None:
    if not s.refused_by(parse_load_balancer, value):
        return
    assert_refused(world, ["service", "update", "api", "--load-balancer", value], codes=(2,))


# --- revisions -------------------------------------------------------------------------


def _write(directory: Path, files: list[tuple[str, bytes]]) -> None:
    for name, data in files:
        (directory / name).write_bytes(data)


def _tar(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in dict(files).items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@EXAMPLES
@given(files=s.revision_files)
def test_bad_revision_directories_are_refused(world: World, files: list[tuple[str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as root:
        _write(Path(root), files)
        result = assert_refused(
            world, ["revision", "add", "api", root, "--label", "x1"], codes=(2,)
        )
    assert s.SENTINEL not in result.stderr


@EXAMPLES
@given(files=s.revision_files)
def test_bad_revision_archives_are_refused(world: World, files: list[tuple[str, bytes]]) -> None:
    result = assert_refused(world, ["revision", "add", "api", "-"], codes=(2,), stdin=_tar(files))
    assert s.SENTINEL not in result.stderr


@FEW
@given(data=st.binary(max_size=2000))
def test_garbage_on_standard_input_is_refused(world: World, data: bytes) -> None:
    assert_refused(world, ["revision", "add", "api", "-"], codes=(2,), stdin=data)


def test_archive_tricks_are_refused(world: World) -> None:
    def archive(*members: tarfile.TarInfo, data: bytes = b"") -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for member in members:
                tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
        return buffer.getvalue()

    link = tarfile.TarInfo("web.env")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    escape = tarfile.TarInfo("../../web.service")
    escape.size = len(s.GOOD_UNIT)
    device = tarfile.TarInfo("web.service")
    device.type = tarfile.CHRTYPE
    for stdin, message in [
        (archive(link), "not a regular file"),
        (archive(escape, data=s.GOOD_UNIT), "inside a directory"),
        (archive(device), "not a regular file"),
        (b"\x1f\x8b" + b"\x00" * 100, "not a readable tar"),  # gzip magic, then nothing
        (b"", "standard input is empty"),
        (b"\x00" * (8 * 1024 * 1024 + 10), "larger than 8 MB"),
    ]:
        result = assert_refused(world, ["revision", "add", "api", "-"], codes=(2,), stdin=stdin)
        assert message in result.stderr


def test_a_directory_of_many_or_odd_files_is_refused(world: World, tmp_path: Path) -> None:
    many = tmp_path / "many"
    many.mkdir()
    for number in range(101):
        (many / f"u{number}.service").write_bytes(s.GOOD_UNIT)
    assert "more than 100" in assert_refused(world, ["revision", "add", "api", str(many)]).stderr
    nested = tmp_path / "nested"
    (nested / "sub").mkdir(parents=True)
    (nested / "web.service").write_bytes(s.GOOD_UNIT)
    assert "is a directory" in assert_refused(world, ["revision", "add", "api", str(nested)]).stderr
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "web.service").symlink_to("/proc/self/environ")
    assert_refused(world, ["revision", "add", "api", str(linked)], codes=(2,))
    (tmp_path / "file").write_bytes(s.GOOD_UNIT)
    assert (
        "not a directory"
        in assert_refused(world, ["revision", "add", "api", str(tmp_path / "file")]).stderr
    )
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "web.service").write_bytes(s.GOOD_UNIT)
    (unreadable / "web.service").chmod(0)
    result = world.run("revision", "add", "api", str(unreadable), "--label", "unr")
    (unreadable / "web.service").chmod(0o600)
    world.baseline = None  # root reads a mode-0 file, and the revision is then stored
    if os.geteuid() == 0:  # root reads a mode-0 file anyway
        assert result.code == 0, result.stderr
    else:
        assert_clean_failure(result, codes=(2,))


@EXAMPLES
@given(label=s.names, revision=s.any_text)
def test_bad_labels_and_revision_names(world: World, label: str, revision: str) -> None:
    if s.refused_by(validation.revision_label, label):
        assert_refused(
            world, ["revision", "add", "api", str(world.root / "v1"), "--label", label], codes=(2,)
        )
    # Every revision stored so far, not only the seeded one: as root, the unreadable-file
    # test above stores one labelled "unr".
    stored = world.wiring().store.list_revisions("api")
    if revision and any(r.label == revision or r.id.startswith(revision.lower()) for r in stored):
        return
    assert_refused(world, ["revision", "show", "api", revision], codes=(2,))


# --- weights, rollout, history ---------------------------------------------------------


@EXAMPLES
@given(
    good=st.lists(st.just("v1=5"), max_size=1),
    name=s.any_text.filter(lambda n: "=" not in n),
    weight=s.bad_weights,
    shape=st.sampled_from(["{n}={w}", "{n}", "={w}", "{n}=={w}"]),
)
def test_bad_weights_are_refused(
    world: World, good: list[str], name: str, weight: str, shape: str
) -> None:
    pair = shape.format(n=name, w=weight)
    if not pair:
        return
    assert_refused(world, ["weights", "api", *good, pair], codes=(2,))


def test_weights_without_pairs_are_refused(world: World) -> None:
    assert "at least one" in assert_refused(world, ["weights", "api"], codes=(2,)).stderr


@EXAMPLES
@given(
    interval=s.bad_numbers.filter(lambda v: s.refused_by(_seconds(0.1), v)),
    timeout=s.bad_numbers.filter(lambda v: s.refused_by(_seconds(0), v)),
    which=st.sampled_from(["--interval", "--timeout"]),
)
def test_bad_watch_intervals_are_refused(
    world: World, interval: str, timeout: str, which: str
) -> None:
    value = interval if which == "--interval" else timeout
    assert_refused(world, ["rollout", "watch", "api", which, value], codes=(2,))


def _seconds(minimum: float):  # type: ignore[no-untyped-def]
    from flotilla.cli.options import parse_seconds

    return lambda text: parse_seconds("--x", text, minimum=minimum)


@EXAMPLES
@given(
    reason=st.one_of(
        st.sampled_from(["", "  ", "x" * 201, "line\nbreak", "bell\x07", "esc\x1b[2J", "\u2028"]),
        st.text(s.ARGV_CHARACTERS, max_size=250),
    ).filter(_no_dash := lambda r: not r.startswith("-")),
    command=st.sampled_from(["pause", "resume", "revert"]),
)
def test_bad_reasons_are_refused(world: World, reason: str, command: str) -> None:
    from flotilla.cli.rollout_commands import parse_reason

    if not s.refused_by(parse_reason, reason):
        return
    assert (
        "--reason"
        in assert_refused(world, ["rollout", command, "api", "--reason", reason], codes=(2,)).stderr
    )


@EXAMPLES
@given(limit=s.bad_numbers)
def test_bad_history_limits_are_refused(world: World, limit: str) -> None:
    if limit.strip().isdigit() and 1 <= int(limit) <= 10_000:
        return
    assert (
        "--limit" in assert_refused(world, ["history", "api", "--limit", limit], codes=(2,)).stderr
    )


# --- trace -----------------------------------------------------------------------------


@EXAMPLES
@given(since=s.any_text, revision=st.none() | s.any_text)
def test_trace_rollout_with_odd_filters_fails_cleanly(
    world: World, since: str, revision: str | None
) -> None:
    args = ["trace", "rollout", "api", "--since", since]
    if revision is not None:
        args += ["--revision", revision]
    before = world.snapshot()
    result = world.run(*args)
    assert world.snapshot() == before
    if result.code != 0 or result.exception is not None:
        assert_clean_failure(result)


@pytest.mark.parametrize("since", ["99999999999999d", "9" * 400 + "s", "1" * 30 + "w"])
def test_an_enormous_since_is_refused(world: World, since: str) -> None:
    assert "--since" in assert_refused(world, ["trace", "rollout", "api", "--since", since]).stderr


@FEW
@given(deploy_id=s.any_text)
def test_trace_deploy_with_odd_ids_fails_cleanly(world: World, deploy_id: str) -> None:
    if deploy_id == "i-1.1":
        return
    assert_refused(world, ["trace", "deploy", deploy_id])


@FEW
@given(content=st.one_of(st.binary(max_size=500), st.text(max_size=300).map(str.encode)))
def test_trace_from_a_garbage_otlp_file_fails_cleanly(world: World, content: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".json") as file:
        file.write(content)
        file.flush()
        for args in (
            ["trace", "rollout", "api", "--from-otlp", file.name],
            ["trace", "deploy", "i-1.1", "--from-otlp", file.name],
        ):
            assert_refused(world, args)


def test_trace_html_into_a_missing_directory_fails_cleanly(world: World, tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "trace.html"
    assert_refused(world, ["trace", "rollout", "api", "--html", str(target)], codes=(1, 2))


@pytest.mark.parametrize("width", ["0", "39", "1001", "wide", "-5"])
def test_trace_width_out_of_range_is_a_usage_error(world: World, width: str) -> None:
    assert_refused(world, ["trace", "rollout", "api", "--width", width], codes=(2,))


# --- users and keys -------------------------------------------------------------------


@EXAMPLES
@given(name=s.names, key=st.one_of(s.binary_garbage, st.text(max_size=300).map(str.encode)))
def test_user_add_with_bad_names_or_keys_is_refused(world: World, name: str, key: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".pub") as file:
        file.write(key)
        file.flush()
        assert_refused(world, ["user", "add", name or "alice", "--key", file.name], codes=(2,))
        assert_refused(world, ["user", "add", "alice", "--key", "-"], codes=(2,), stdin=key)


@pytest.mark.parametrize(
    "key",
    [
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        b"-----END OPENSSH PRIVATE KEY-----\n",
        b"ssh-ed25519 AAAA",
        b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI; rm -rf / alice",
        b'command="/bin/sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ0',
        b"ssh-rsa " + b"A" * 300_000,
        b"",
    ],
)
def test_user_add_refuses_keys_that_are_not_public_keys(world: World, key: bytes) -> None:
    assert_refused(world, ["user", "add", "alice", "--key", "-"], codes=(2,), stdin=key)


@FEW
@given(name=s.names)
def test_user_commands_with_bad_names(world: World, name: str) -> None:
    for command in ("remove", "activate", "deactivate"):
        assert_refused(world, ["user", command, name or "nobody"], codes=(1, 2))


@FEW
@given(user=s.names, service=s.names)
def test_keys_never_crashes_and_prints_no_keys_for_bad_input(
    world: World, user: str, service: str
) -> None:
    before = world.snapshot()
    result = world.run("keys", *([user] if user else []), "--service", service)
    assert world.snapshot() == before
    assert result.exception is None
    assert result.stdout == ""  # nobody may log in on bad input: sshd fails closed
    if result.code != 0:
        assert_clean_failure(result, codes=(2,))


def test_user_add_key_file_problems(world: World, tmp_path: Path) -> None:
    assert (
        "does not exist"
        in assert_refused(
            world, ["user", "add", "alice", "--key", str(tmp_path / "missing.pub")]
        ).stderr
    )
    assert_refused(world, ["user", "add", "alice", "--key", str(tmp_path)])
    assert (
        "only once"
        in assert_refused(
            world, ["user", "add", "alice", "--key", "-", "--key", "-"], stdin=b"x"
        ).stderr
    )


# --- daemons and stacks ----------------------------------------------------------------


@FEW
@given(name=s.bad_service_names)
def test_the_agent_refuses_a_bad_service_before_starting(world: World, name: str) -> None:
    assert_refused(world, ["agent", "--service", name, "--instance-id", "i-9"], codes=(2,))


@pytest.mark.parametrize(
    "args",
    [
        ["agent"],
        ["agent", "--service", "api", "--poll-interval", "0"],
        ["agent", "--service", "api", "--poll-interval", "nan"],
        ["agent", "--service", "api", "--lease-seconds", "1e9"],
        ["agent", "--service", "api", "--agent-lease-seconds", "1", "--poll-interval", "5"],
        ["agent", "--service", "api", "--runtime", "docker"],
        ["scheduler", "--interval", "0"],
        ["scheduler", "--interval", "inf"],
        ["scheduler", "--shard", "3/2"],
        ["scheduler", "--shard", "x"],
        ["scheduler", "--shard", "-1/2"],
        ["scheduler", "--shard", "0/0"],
        ["scheduler", "--instance-ttl", "1"],
        ["init", "--scheduler-count", "9"],
        ["init", "--scheduler-count", "many"],
        ["service", "provision", "api", "--min", "3", "--max", "1"],
        ["service", "provision", "api", "--min", "1"],
        ["service", "provision", "api", "--vpc-id", "$(reboot)"],
        ["service", "provision", "api", "--instance-port", "70000"],
        ["demo", "--instances", "1000"],
        ["demo", "--instances", "x"],
        ["no-such-command"],
        ["service", "show"],
        ["service", "show", "api", "--output", "yaml"],
        ["service", "show", "api", "--no-such-option"],
    ],
    ids=" ".join,
)
def test_daemon_stack_and_usage_mistakes_are_refused(world: World, args: list[str]) -> None:
    assert_refused(world, args, codes=(2,))


@pytest.mark.parametrize("deploy_id", ["", "i-1." + "9" * 3000])
def test_a_deploy_id_dynamodb_cannot_hold_is_bad_input(world: World, deploy_id: str) -> None:
    result = assert_refused(world, ["trace", "deploy", deploy_id], codes=(2,))
    assert "invalid deploy id" in result.stderr


def test_a_fifo_in_a_revision_directory_is_refused_at_once(tmp_path: Path) -> None:
    (tmp_path / "web.service").write_bytes(s.GOOD_UNIT)
    fifo = tmp_path / "web.env"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            revision_sources.from_directory(tmp_path)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=3)
    blocked = reader.is_alive()
    if blocked:  # blocked in open(): give it a writer so that it ends
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
    assert not blocked, "revision_sources.from_directory blocked on the FIFO"
    assert outcome, "revision_sources.from_directory still blocked"
    assert isinstance(outcome[0], ValidationError)
    assert len(outcome) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["scheduler", "--interval", "nan"],
        ["scheduler", "--lease-seconds", "inf"],
        ["agent", "--service", "api", "--instance-id", "i-1", "--poll-interval", "nan"],
        ["rollout", "watch", "api", "--timeout", "-inf"],
    ],
)
def test_seconds_that_are_not_finite_numbers_are_refused(world: World, args: list[str]) -> None:
    assert "give a number of seconds" in assert_refused(world, args, codes=(2,)).stderr
