"""Installed unit names, unit rendering and environment files (engine/units.py)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from flotilla.engine.errors import ValidationError
from flotilla.engine.unit_syntax import unit_settings
from flotilla.engine.units import (
    InstalledName,
    belongs_to,
    installed_name,
    is_owned,
    parse_environment_file,
    parse_installed_name,
    plan_installation,
    render_environment_file,
    render_unit,
    require_owned,
)

REVISION = "3f2a9c1b7d4e" + "0" * 52
OTHER = "0123456789ab" + "f" * 52

unit_stems = st.from_regex(r"[A-Za-z0-9:_.\\-]{1,40}", fullmatch=True)
instances = st.from_regex(r"[A-Za-z0-9:_.\\-]{0,20}", fullmatch=True)
revisions = st.from_regex(r"[0-9a-f]{12,64}", fullmatch=True)
suffixes = st.sampled_from(["service", "socket", "timer"])
env_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)


def test_installed_name_carries_prefix_and_twelve_hex_of_the_revision() -> None:
    assert installed_name("web.service", REVISION) == "flotilla-web-3f2a9c1b7d4e.service"
    assert installed_name("worker@.service", REVISION) == "flotilla-worker-3f2a9c1b7d4e@.service"
    assert installed_name("tick.timer", REVISION) == "flotilla-tick-3f2a9c1b7d4e.timer"


@given(stem=unit_stems, suffix=suffixes, revision=revisions)
@example(stem="web-3f2a9c1b7d4e", suffix="service", revision=OTHER)
@example(stem="flotilla-web", suffix="socket", revision=REVISION)
@example(stem="a.b.c", suffix="timer", revision=REVISION)
def test_names_round_trip(stem: str, suffix: str, revision: str) -> None:
    unit = f"{stem}.{suffix}"

    name = installed_name(unit, revision)

    assert parse_installed_name(name) == InstalledName(unit, revision[:12])
    assert belongs_to(name, revision)
    assert not belongs_to(name, "f" * 12 if not revision.startswith("f" * 12) else "e" * 12)


@given(stem=unit_stems.filter(lambda s: "." not in s), instance=instances, revision=revisions)
def test_template_and_instance_names_round_trip(stem: str, instance: str, revision: str) -> None:
    template = installed_name(f"{stem}@.service", revision)
    assert parse_installed_name(template) == InstalledName(f"{stem}@.service", revision[:12])
    running = template.replace("@.service", f"@{instance}.service")
    assert parse_installed_name(running) == InstalledName(
        f"{stem}@{instance}.service", revision[:12]
    )


@pytest.mark.parametrize(
    "name",
    [
        "docker.service",
        "flotilla-web.service",  # no revision
        "flotilla-web-3f2a9c1b7d4.service",  # 11 hex characters
        "flotilla-web-3F2A9C1B7D4E.service",  # not lowercase hex
        "flotilla-web-3f2a9c1b7d4e.mount",  # a type Flotilla never installs
        "flotilla--3f2a9c1b7d4e.service",  # no unit stem
        "xflotilla-web-3f2a9c1b7d4e.service",
        "flotilla-web-3f2a9c1b7d4e.service.d",
        "flotilla-web-3f2a9c1b7d4e.service\n",
    ],
)
def test_names_flotilla_does_not_own(name: str) -> None:
    assert parse_installed_name(name) is None
    assert not is_owned(name)
    with pytest.raises(ValidationError, match="only stops or removes the units it installed"):
        require_owned([name])


@pytest.mark.parametrize(
    ("unit", "revision"),
    [
        ("web.mount", REVISION),
        ("", REVISION),
        ("web.service", "3f2a9c"),
        ("web.service", "G" * 12),
        ("web.service", REVISION + "\n"),
    ],
)
def test_installed_name_refuses_bad_input(unit: str, revision: str) -> None:
    with pytest.raises(ValidationError):
        installed_name(unit, revision)


def test_require_owned_refuses_one_string() -> None:
    with pytest.raises(ValidationError, match="list"):
        require_owned("flotilla-web-3f2a9c1b7d4e.service")  # type: ignore[arg-type]


SIBLINGS = {
    "web.service": "flotilla-web-3f2a9c1b7d4e.service",
    "db.service": "flotilla-db-3f2a9c1b7d4e.service",
    "worker@.service": "flotilla-worker-3f2a9c1b7d4e@.service",
    "web.socket": "flotilla-web-3f2a9c1b7d4e.socket",
}


def test_references_to_siblings_are_renamed_and_others_kept() -> None:
    text = (
        "# After=db.service in a comment stays\n"
        "[Unit]\n"
        "Description=needs db.service\n"
        "After=db.service docker.service network-online.target\n"
        "Requires=db.service\n"
        "Wants=worker@1.service worker@%i.service other@1.service\n"
        "BindsTo = db.service\n"
        "OnFailure=web.service\n"
        "[Service]\n"
        "Sockets=web.socket\n"
        "ExecStart=/bin/echo db.service\n"
        "[Install]\n"
        "WantedBy=multi-user.target web.service\n"
    )

    rendered = render_unit("web.service", text, SIBLINGS, None)

    assert rendered == (
        "# After=db.service in a comment stays\n"
        "[Unit]\n"
        "Description=needs db.service\n"
        "After=flotilla-db-3f2a9c1b7d4e.service docker.service network-online.target\n"
        "Requires=flotilla-db-3f2a9c1b7d4e.service\n"
        "Wants=flotilla-worker-3f2a9c1b7d4e@1.service flotilla-worker-3f2a9c1b7d4e@%i.service "
        "other@1.service\n"
        "BindsTo = flotilla-db-3f2a9c1b7d4e.service\n"
        "OnFailure=flotilla-web-3f2a9c1b7d4e.service\n"
        "[Service]\n"
        "Sockets=flotilla-web-3f2a9c1b7d4e.socket\n"
        "ExecStart=/bin/echo db.service\n"
        "[Install]\n"
        "WantedBy=multi-user.target flotilla-web-3f2a9c1b7d4e.service\n"
    )


def test_keys_are_renamed_only_in_the_sections_that_give_them_meaning() -> None:
    timer = "[Timer]\nUnit=web.service\n[Service]\nUnit=web.service\n"
    socket = "[Socket]\nService=web.service\n"

    assert render_unit("tick.timer", timer, SIBLINGS, None) == (
        "[Timer]\nUnit=flotilla-web-3f2a9c1b7d4e.service\n[Service]\nUnit=web.service\n"
    )
    assert render_unit("web.socket", socket, SIBLINGS, None) == (
        "[Socket]\nService=flotilla-web-3f2a9c1b7d4e.service\n"
    )


def test_continued_reference_lines_are_renamed_too() -> None:
    text = "[Unit]\nAfter=db.service \\\n  web.service \\\n  docker.service\nWants=db.service\n"

    assert render_unit("x.service", text, SIBLINGS, None) == (
        "[Unit]\nAfter=flotilla-db-3f2a9c1b7d4e.service \\\n"
        "  flotilla-web-3f2a9c1b7d4e.service \\\n  docker.service\n"
        "Wants=flotilla-db-3f2a9c1b7d4e.service\n"
    )
    settings = unit_settings(render_unit("x.service", text, SIBLINGS, None))
    assert settings[0][:2] == ("Unit", "After")
    assert settings[0][2].split() == [
        "flotilla-db-3f2a9c1b7d4e.service",
        "flotilla-web-3f2a9c1b7d4e.service",
        "docker.service",
    ]


def test_environment_file_goes_last_in_the_service_section() -> None:
    text = "[Unit]\nAfter=db.service\n\n[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy=x\n"

    rendered = render_unit("web.service", text, SIBLINGS, "/run/flotilla/env/a%b.env")

    assert rendered == (
        "[Unit]\nAfter=flotilla-db-3f2a9c1b7d4e.service\n\n[Service]\nExecStart=/bin/true\n"
        "EnvironmentFile=/run/flotilla/env/a%%b.env\n\n[Install]\nWantedBy=x\n"
    )


def test_environment_file_adds_the_section_when_missing() -> None:
    rendered = render_unit("web.socket", "[Socket]\nListenStream=80", SIBLINGS, "/e/web.env")
    assert rendered == "[Socket]\nListenStream=80\nEnvironmentFile=/e/web.env\n"
    rendered = render_unit("web.service", "[Unit]\nDescription=x\n", SIBLINGS, "/e/web.env")
    assert rendered == "[Unit]\nDescription=x\n\n[Service]\nEnvironmentFile=/e/web.env\n"


def test_a_timer_cannot_have_an_environment() -> None:
    with pytest.raises(ValidationError, match="runs no process"):
        render_unit("tick.timer", "[Timer]\nOnCalendar=daily\n", SIBLINGS, "/e/tick.env")


def test_plan_keeps_each_environment_with_its_own_unit() -> None:
    units = {"web.service": "[Service]\nExecStart=/bin/web\n", "db.service": "[Unit]\n"}
    environments = {"web.service": {"TOKEN": "t0ps3cret"}, "db.service": {}}

    planned = plan_installation(REVISION, units, environments, "/run/flotilla/env")

    assert [(p.unit, p.installed, p.environment_file) for p in planned] == [
        ("db.service", "flotilla-db-3f2a9c1b7d4e.service", None),
        (
            "web.service",
            "flotilla-web-3f2a9c1b7d4e.service",
            "flotilla-web-3f2a9c1b7d4e.service.env",
        ),
    ]
    assert planned[1].environment == 'TOKEN="t0ps3cret"\n'
    assert "EnvironmentFile=/run/flotilla/env/flotilla-web-3f2a9c1b7d4e.service.env" in (
        planned[1].text
    )
    assert "EnvironmentFile" not in planned[0].text
    assert "t0ps3cret" not in repr(planned), "the secret must not show in logs or tracebacks"


@pytest.mark.parametrize(
    ("environments", "directory", "message"),
    [
        ({"cache.service": {"A": "1"}}, "/env", "does not contain"),
        ({"web.service": {"1A": "1"}}, "/env", "invalid environment variable name"),
        ({"web.service": {"A": "1"}}, "relative/env", "must be absolute"),
    ],
)
def test_plan_refuses_what_cannot_be_installed(
    environments: dict[str, dict[str, str]], directory: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        plan_installation(REVISION, {"web.service": "[Service]\n"}, environments, directory)


def test_environment_file_quotes_what_systemd_would_interpret() -> None:
    rendered = render_environment_file({"B": 'a "b" $c `d` \\e', "A": "x\ny", "C": ""})

    assert rendered == 'A="x\ny"\nB="a \\"b\\" \\$c \\`d\\` \\\\e"\nC=""\n'
    assert render_environment_file({}) == ""


@given(st.dictionaries(env_names, env_values, max_size=8))
@example({"V": "trailing  ", "W": "  leading", "X": "\r\n\t", "Y": "\\\n", "Z": "'\"'"})
def test_environment_files_round_trip(variables: dict[str, str]) -> None:
    assert parse_environment_file(render_environment_file(variables)) == variables


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=plain value  \n", {"A": "plain value"}),
        ("  A = spaced\n", {"A": "spaced"}),
        ("A='single $quoted \\n'\n", {"A": "single $quoted \\n"}),
        ('A="x\\ny"\n', {"A": "x\\ny"}),  # only " \\ ` $ are escapes inside double quotes
        ("A=one\\\ntwo\n", {"A": "onetwo"}),  # a continued line
        ("A=un\\ quoted\\ \n", {"A": "un quoted "}),
        ("# A=comment\n; B=comment\nC=3\n", {"C": "3"}),
        ("no equals sign\nD=4", {"D": "4"}),
        ("1BAD=x\nGOOD=y\n", {"GOOD": "y"}),
        ("A=1\nA=2\n", {"A": "2"}),
        ('A="x" y\n', {"A": "xy"}),
        ("A=\n", {"A": ""}),
    ],
)
def test_environment_file_syntax_as_systemd_reads_it(text: str, expected: dict[str, str]) -> None:
    assert parse_environment_file(text) == expected


def test_unit_settings_joins_continuations_and_skips_comments() -> None:
    text = "[Service]\n# ExecStart=/no\nExecStart=/bin/sh -c \\\n  'echo hi'\nType=exec\n"

    assert unit_settings(text) == [
        ("Service", "ExecStart", "/bin/sh -c  'echo hi'"),
        ("Service", "Type", "exec"),
    ]
