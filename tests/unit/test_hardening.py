"""The default sandbox drop-in of a deployed unit (engine/hardening.py), as a pure function."""

from __future__ import annotations

import pytest

from flotilla.engine.hardening import DEFAULT_SANDBOX, hardening_drop_in
from flotilla.engine.unit_plan import plan_units
from flotilla.engine.unit_syntax import unit_settings

PLAIN = "[Service]\nExecStart=/usr/bin/web\n"
REVISION = "3f2a9c1b7d4e" + "0" * 52


def written(drop_in: str | None) -> dict[str, str]:
    assert drop_in is not None
    return {key: value for section, key, value in unit_settings(drop_in) if section == "Service"}


def test_a_plain_service_gets_every_default_setting() -> None:
    assert written(hardening_drop_in("web.service", PLAIN)) == dict(DEFAULT_SANDBOX)


@pytest.mark.parametrize("unit", ["web.socket", "web.timer", "web.path"])
def test_only_services_get_one(unit: str) -> None:
    assert hardening_drop_in(unit, "[Unit]\nDescription=x\n") is None


@pytest.mark.parametrize(
    "switch",
    [
        "X-Flotilla-Hardening=no",
        "X-Flotilla-Hardening = false",
        "x-flotilla-hardening=0",
        "X-Flotilla-Hardening=Off",
    ],
)
def test_the_switch_turns_it_off_in_any_section(switch: str) -> None:
    assert hardening_drop_in("web.service", PLAIN + switch + "\n") is None
    assert hardening_drop_in("web.service", f"[Unit]\n{switch}\n" + PLAIN) is None


def test_any_other_value_of_the_switch_leaves_it_on() -> None:
    text = PLAIN + "X-Flotilla-Hardening=yes\n"
    assert written(hardening_drop_in("web.service", text)) == dict(DEFAULT_SANDBOX)


def test_a_setting_the_unit_names_is_left_to_the_unit() -> None:
    text = PLAIN + "ProtectSystem=strict\nPrivateTmp=no\n"
    settings = written(hardening_drop_in("web.service", text))
    assert "ProtectSystem" not in settings
    assert "PrivateTmp" not in settings
    assert settings == {
        k: v for k, v in DEFAULT_SANDBOX if k not in ("ProtectSystem", "PrivateTmp")
    }


def test_a_setting_continued_over_lines_or_emptied_still_counts_as_named() -> None:
    text = PLAIN + "SystemCallArchitectures=native \\\n  x86\nRestrictNamespaces=\n"
    settings = written(hardening_drop_in("web.service", text))
    assert "SystemCallArchitectures" not in settings
    assert "RestrictNamespaces" not in settings


def test_a_name_in_another_section_or_a_comment_does_not_count() -> None:
    text = "[Unit]\nProtectSystem=strict\n" + PLAIN + "# PrivateTmp=no\n"
    assert written(hardening_drop_in("web.service", text)) == dict(DEFAULT_SANDBOX)


def test_dynamic_user_keeps_its_stricter_implied_settings() -> None:
    # DynamicUser=yes implies ProtectSystem=strict, ProtectHome=read-only, PrivateTmp=yes;
    # a drop-in's ProtectSystem=full would loosen the first.
    settings = written(hardening_drop_in("web.service", PLAIN + "DynamicUser=yes\n"))
    assert not {"ProtectSystem", "ProtectHome", "PrivateTmp"} & set(settings)
    assert settings["NoNewPrivileges"] == "yes"


def test_a_unit_naming_every_setting_gets_none() -> None:
    text = PLAIN + "".join(f"{key}=no\n" for key, _ in DEFAULT_SANDBOX)
    assert hardening_drop_in("web.service", text) is None


def test_the_unit_plan_is_the_same_with_the_drop_in_as_without() -> None:
    """The drop-in follows from the unit file, so the plan compares only the files: a
    revision that changes only the switch changes its unit, and nothing else moves."""
    before = {"web.service": f"flotilla-web-{REVISION[:12]}.service"}
    kept = plan_units(
        before=before,
        from_units={"web.service": PLAIN},
        from_environments={},
        to_revision="9" * 64,
        to_units={"web.service": PLAIN},
        to_environments={},
    )
    assert kept.changed == ()
    switched = plan_units(
        before=before,
        from_units={"web.service": PLAIN},
        from_environments={},
        to_revision="9" * 64,
        to_units={"web.service": PLAIN + "X-Flotilla-Hardening=no\n"},
        to_environments={},
    )
    assert switched.changed == ("web.service",)
