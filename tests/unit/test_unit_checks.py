"""`revision add`'s checks of unit files: what systemd would refuse (never added), what it
would ignore (added only with --force), and `systemd-analyze verify`'s findings, both
decided by one `refuse`."""

from __future__ import annotations

import shutil

import pytest

from flotilla.cli import unit_verify
from flotilla.cli.container_unit import docker_unit
from flotilla.cli.demo.story import BROKEN_UNIT, UNIT
from flotilla.engine.errors import ValidationError
from flotilla.engine.unit_checks import Problem, advice, check_unit, check_units, refuse
from flotilla.engine.unit_keys import KNOWN_KEYS

GOOD = "[Unit]\nDescription=web\n[Service]\nExecStart=/usr/bin/web --port 80\n"


def messages(name: str, text: str) -> list[tuple[int | None, bool, str]]:
    return [(p.line, p.fatal, p.message) for p in check_unit(name, text)]


def test_a_typo_in_a_key_is_found_with_a_suggestion_and_needs_force() -> None:
    text = "[Unit]\nDescription=web\n[Service]\nExecStartt=/usr/bin/web\nExecStart=/usr/bin/web\n"
    problems = check_unit("web.service", text)
    assert [(p.line, p.fatal) for p in problems] == [(4, False)]
    assert "unknown key ExecStartt= in [Service] (did you mean ExecStart=?)" in problems[0].message
    with pytest.raises(ValidationError) as refused:
        refuse(problems, force=False)
    assert str(refused.value).startswith("unit web.service, line 4: unknown key ExecStartt=")
    assert "pass --force" in str(refused.value)
    assert refuse(problems, force=True) == problems  # let through, to be warned about


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("web.service", "[Service]\nExecStartt=/usr/bin/web\n", "a service needs ExecStart="),
        ("web.service", "[Unit]\nDescription=no service section\n", "a service needs ExecStart="),
        ("web.service", "[Service]\nType=simple\nExecStart=/bin/a\nExecStart=/bin/b\n",
         "a second ExecStart="),
        ("web.service", "[Service]\nExecStart=bin/web\n", "neither an absolute path"),
        ("web.service", "[Service]\nExecStart=/bin/web\nExecStartPre=-./setup\n",
         "neither an absolute path"),
        ("tick.timer", "[Timer]\nPersistent=true\n", "a timer needs a setting"),
        ("web.socket", "[Socket]\nAccept=no\n", "a socket needs a Listen"),
    ],
)  # fmt: skip
def test_what_systemd_refuses_is_refused_even_with_force(
    name: str, text: str, fragment: str
) -> None:
    problems = check_unit(name, text)
    assert any(p.fatal and fragment in p.message for p in problems), problems
    for force in (False, True):
        with pytest.raises(ValidationError, match="--force cannot help"):
            refuse(problems, force=force)


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        "[Service]\nType=oneshot\nExecStart=/bin/a\nExecStart=/bin/b\n",
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStop=/bin/stop\n",
        "[Service]\nExecStart=/bin/a\nExecStart=\nExecStart=/bin/b\n",  # an empty one resets
        "[Service]\nExecStart=-@/bin/web web-name\nExecStartPre=+true\n",  # prefixes, a name
        "[Service]\nExecStart=/bin/web \\\n  --long-option\nX-Team=payments\n[X-Ours]\nA=b\n",
        "[Service]\nExecStart=/bin/web\n[Install]\nWantedBy=multi-user.target\nUpheldBy=x.target\n",
        UNIT.format(label="v1", python="/usr/bin/python3"),
        BROKEN_UNIT.format(label="v3"),  # it fails when it runs, not when it is read
    ],
)
def test_sound_units_pass(text: str) -> None:
    assert check_unit("web.service", text) == []


def test_timers_and_sockets_that_say_when_and_where_pass() -> None:
    assert (
        check_unit("tick.timer", "[Timer]\nOnCalendar=daily\n[Install]\nWantedBy=timers.target\n")
        == []
    )
    assert check_unit("web.socket", "[Socket]\nListenStream=8080\n") == []


def test_an_unknown_section_or_another_types_section_is_found() -> None:
    found = messages(
        "web.service",
        "[Service]\nExecStart=/bin/web\n[Servise]\nUser=x\n[Timer]\nOnCalendar=daily\n",
    )
    assert [(line, fatal) for line, fatal, _ in found] == [(3, False), (5, False)]
    assert "unknown section [Servise]" in found[0][2]


def test_the_generated_container_unit_passes() -> None:
    text, _ = docker_unit(
        "cache.env", "cache", {"DOCKER_IMAGE": "redis:7", "DOCKER_PORT_6380": "6379"}
    )
    assert check_unit("cache.service", text) == []


def test_a_unit_that_does_not_parse_is_refused_for_that() -> None:
    with pytest.raises(ValidationError, match="malformed section header"):
        check_units({"web.service": "[Service\nExecStart=/bin/web\n"})


def test_one_line_however_many_problems() -> None:
    text = "[Service]\nExecStart=/bin/web\n" + "".join(f"Bogus{n}=1\n" for n in range(5))
    with pytest.raises(ValidationError) as refused:
        refuse(check_unit("web.service", text), force=False)
    message = str(refused.value)
    assert "\n" not in message
    assert "(and 3 more problems)" in message


def test_the_known_keys_are_systemds() -> None:
    assert {"ExecStart", "Restart", "User", "EnvironmentFile", "MemoryMax"} <= KNOWN_KEYS["Service"]
    assert {"Description", "After", "Requires"} <= KNOWN_KEYS["Unit"]
    assert {"ListenStream"} <= KNOWN_KEYS["Socket"]
    assert {"OnCalendar", "Persistent"} <= KNOWN_KEYS["Timer"]
    assert "ExecStartt" not in KNOWN_KEYS["Service"]


# --- systemd-analyze verify ----------------------------------------------------------------


SAMPLE = """\
/tmp/v/a.service:6: Failed to parse service restart specifier, ignoring: sometimes
/tmp/v/a.service:5: Unknown key 'ExecStartt' in section [Service], ignoring.
a.service: Failed to create a.service/start: Unit nosuch.service not found.
db.service: Command /usr/bin/db is not executable: No such file or directory
two.service: Service has more than one ExecStart= setting, which is only allowed for Type=oneshot services. Refusing.
Unit two.service has a bad unit file setting.
two.socket: service two.service not loaded, socket cannot be started.
Failed to lookup RuntimeDirectory path: No such device or address
"""  # noqa: E501 -- systemd-analyze's own lines


def test_systemd_analyze_output_is_read_and_the_hosts_own_findings_left_out() -> None:
    paths = {f"/tmp/v/{n}": n for n in ("a.service", "db.service", "two.service", "two.socket")}
    found = unit_verify.parse(SAMPLE, paths)
    assert [(p.unit, p.line, p.fatal) for p in found] == [
        ("a.service", 6, False),
        ("a.service", 5, False),
        ("two.service", None, True),
    ]
    assert found[0].message.startswith("systemd-analyze: Failed to parse service restart")


def test_ours_and_systemds_finding_of_one_line_are_said_once() -> None:
    ours = Problem("a.service", 5, "unknown key ExecStartt= in [Service]", fatal=False)
    theirs = Problem("a.service", 5, "systemd-analyze: Unknown key 'ExecStartt'", fatal=False)
    refused = Problem("a.service", None, "systemd-analyze: ... Refusing", fatal=True)
    ours_too = Problem("a.service", None, "a service needs ExecStart=", fatal=True)
    with pytest.raises(ValidationError) as error:
        refuse([ours_too, ours, theirs, refused], force=False)
    assert str(error.value).count("a.service") == 1  # one unit-wide refusal
    assert "Unknown key" not in str(error.value)


def test_verify_runs_systemd_analyze_where_there_is_one() -> None:
    if shutil.which("systemd-analyze") is None:  # a failure, not a skip: CI has systemd
        pytest.fail("systemd-analyze is not installed: run ./scripts/setup", pytrace=False)
    units = {
        "web.service": "[Service]\nExecStart=/usr/bin/not-installed-here\nRestart=sometimes\n",
        "db.service": "[Unit]\nRequires=docker.service\n[Service]\nExecStart=/bin/true\n",
    }
    found = unit_verify.verify(units)
    # Restart=sometimes is a value only systemd knows to be wrong; the missing program
    # and the missing docker.service are this machine's business, not the unit's.
    assert [(p.unit, p.line, p.fatal) for p in found] == [("web.service", 3, False)]
    assert "restart specifier" in found[0].message
    assert check_units(units) == []


def test_without_systemd_analyze_our_checks_stand_alone() -> None:
    assert unit_verify.verify({"web.service": GOOD}, program="/nonexistent/systemd-analyze") == []


def test_a_service_that_runs_as_root_is_advised_against_never_refused() -> None:
    units = {
        "root.service": "[Service]\nExecStart=/bin/sleep 1\n",
        "user.service": "[Service]\nExecStart=/bin/sleep 1\nUser=web\n",
        "dynamic.service": "[Service]\nExecStart=/bin/sleep 1\nDynamicUser=true\n",
        "off.service": "[Service]\nExecStart=/bin/sleep 1\nDynamicUser=no\n",
        "web.socket": "[Socket]\nListenStream=80\n",
    }
    found = advice(units)
    assert [line.split()[0] for line in found] == ["off.service", "root.service"]
    assert "give it a user of its own" in found[0]
    assert check_units(units) == []
