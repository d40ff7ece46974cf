"""Revisions are validated, sealed and content-addressed without hashing any secret."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime

import pytest

from flotilla.adapters import items
from flotilla.adapters.secrets import LocalSecretBox
from flotilla.engine.errors import ValidationError
from flotilla.engine.revisions import binding_for, build_revision, verify_revision_id

BOX = LocalSecretBox(os.urandom(32))
WHEN = datetime(2026, 11, 24, tzinfo=UTC)
UNITS = {
    "web.service": "[Unit]\nAfter=docker.service\n[Service]\nExecStart=/usr/bin/web\n",
    "db.service": "[Service]\nExecStart=/usr/bin/db\n",
}


def test_without_environment_the_same_files_give_the_same_id() -> None:
    first = build_revision("api", "v1", UNITS, {}, BOX, WHEN)
    again = build_revision("api", "v1-again", dict(reversed(UNITS.items())), {}, BOX, WHEN)
    assert first.id == again.id
    assert len(first.id) == 64
    assert first.environment is None
    assert build_revision("web", "v1", UNITS, {}, BOX, WHEN).id != first.id


def test_with_environment_every_sealing_gives_a_new_id() -> None:
    env = {"web.service": {"DB_PASSWORD": "hunter2"}}
    first = build_revision("api", "v1", UNITS, env, BOX, WHEN)
    second = build_revision("api", "v1", UNITS, env, BOX, WHEN)
    assert first.id != second.id
    assert BOX.open("api", first.environment, binding_for(first)) == env  # type: ignore[arg-type]


def test_the_id_detects_a_changed_unit_file() -> None:
    revision = build_revision("api", "v1", UNITS, {"db.service": {"X": "1"}}, BOX, WHEN)
    assert verify_revision_id(revision)
    tampered = dataclasses.replace(
        revision, units={**revision.units, "db.service": "[Service]\nExecStart=/bin/evil\n"}
    )
    assert not verify_revision_id(tampered)


@pytest.mark.parametrize(
    ("units", "environments", "label", "message"),
    [
        ({}, {}, "v1", "at least one unit"),
        ({"web.mount": "[Mount]\nWhat=x\n"}, {}, "v1", "only .service"),
        (UNITS, {"cache.service": {"A": "1"}}, "v1", "no unit file of that name"),
        (UNITS, {"web.service": {"1BAD": "1"}}, "v1", "POSIX"),
        (UNITS, {}, "bad label!", "invalid revision label"),
        ({"web.service": "not a unit"}, {}, "v1", "line 1"),
    ],
)
def test_bad_input_is_refused_with_a_reason(
    units: dict[str, str], environments: dict[str, dict[str, str]], label: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        build_revision("api", label, units, environments, BOX, WHEN)


def test_the_stored_item_holds_no_plaintext_value() -> None:
    secret = os.urandom(12).hex()
    revision = build_revision(
        "api", "v1", UNITS, {"web.service": {"DB_PASSWORD": secret}}, BOX, WHEN
    )
    item = items.revision_to_item(revision)
    assert secret not in repr(item)
    assert "DB_PASSWORD" in repr(item)  # names are kept for `revision show`
