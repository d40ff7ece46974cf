"""`flotilla user add|remove|list|activate|deactivate` and `flotilla keys`: SSH access.

Users hold OpenSSH public keys and the services whose instances they may reach;
`flotilla keys` (`cli.keys_command`) is what sshd runs on every instance.
Every input is validated before anything is written, and every change is written
conditionally on the version it was based on (re-applied on a conflict), so a bad
option stores nothing and two operators never overwrite each other's changes.

Users are the environment's, kept in every region it spans (`cli.environment_regions`),
so that logging in to a region's instances never depends on another region. A command
that changes a user reads it in every region first (an unreachable region, or a refusal,
changes nothing anywhere), then writes to each region in turn, saying each region's
outcome when there are several. `user list` reads the region it is given.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flotilla.cli.environment_regions import read_user_everywhere, write_user_everywhere
from flotilla.cli.options import aws_options, wiring_from
from flotilla.cli.output import output_option, print_json, print_table
from flotilla.engine import users, validation
from flotilla.engine.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    ValidationError,
)
from flotilla.engine.operations.names import find_service
from flotilla.engine.ports import UserStore
from flotilla.engine.updates import MAX_ATTEMPTS, apply_until_stored
from flotilla.engine.users import PublicKey, User

if TYPE_CHECKING:
    from flotilla.cli.wiring import Wiring


MAX_KEY_FILE_BYTES = 256 * 1024


# --- reading and changing users ---------------------------------------------------------


def read_keys(sources: Sequence[str]) -> list[PublicKey]:
    """Every public key in the given files ('-' is standard input), all validated."""
    if list(sources).count("-") > 1:
        raise ValidationError("'-' (standard input) can be given to --key only once")
    keys: list[PublicKey] = []
    for source in sources:
        keys.extend(users.public_keys_text(_read_text(source), _source_name(source)))
    return keys


def _source_name(source: str) -> str:
    return "standard input" if source == "-" else repr(source)


def _read_text(source: str) -> str:
    if source == "-":
        if sys.stdin.isatty():
            raise ValidationError(
                "'--key -' reads public keys from standard input, which is a terminal; pipe "
                "them in, e.g. `flotilla user add alice --key - < ~/.ssh/id_ed25519.pub`"
            )
        data = sys.stdin.buffer.read(MAX_KEY_FILE_BYTES + 1)
    else:
        path = Path(source)
        if not path.is_file():
            raise ValidationError(f"key file {source!r} does not exist or is not a file")
        try:
            with path.open("rb") as opened:
                data = opened.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise ValidationError(f"cannot read key file {source!r}: {exc.strerror}") from exc
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ValidationError(
            f"{_source_name(source)} is over {MAX_KEY_FILE_BYTES // 1024} KB; a public key "
            "file is one short line per key"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"{_source_name(source)} is not text; give an OpenSSH public key (.pub) file"
        ) from exc


def _no_such_user(name: str, environment: str) -> NotFoundError:
    return NotFoundError(
        f"user {name!r} does not exist in environment {environment!r}; see "
        "`flotilla user list`, or add it with `flotilla user add`"
    )


def existing_everywhere(wiring: Wiring, name: str) -> dict[str, User | None]:
    """The user in every region (`read_user_everywhere`), refused in one line when no
    region has it."""
    found = read_user_everywhere(wiring, name)
    if not any(found.values()):
        raise _no_such_user(name, wiring.settings.environment)
    return found


def modify_user(store: UserStore, current: User, change: Callable[[User], User]) -> User:
    """Apply `change` (validated) to `current` and store it, re-applying on conflicts."""
    return apply_until_stored(
        current, lambda user: users.user(change(user)), store.put_user, f"user {current.name!r}"
    )


def _add_to(current: User, keys: Sequence[PublicKey], services: Sequence[str], admin: bool) -> User:
    with_keys = users.with_keys(current, keys)
    return replace(
        with_keys,
        services=tuple(dict.fromkeys((*current.services, *services))),
        admin=current.admin or admin,
    )


# --- output ----------------------------------------------------------------------------


def _key_summaries(record: User) -> list[dict[str, str]]:
    """Type, fingerprint and comment of each key: never the whole key."""
    summaries = []
    for line in record.ssh_keys:
        try:
            key = users.public_key(line)
        except ValidationError:
            summaries.append({"type": "?", "fingerprint": "(malformed stored key)", "comment": ""})
            continue
        summaries.append({"type": key.type, "fingerprint": key.fingerprint, "comment": key.comment})
    return summaries


def user_summary(record: User) -> dict[str, Any]:
    return {
        "name": record.name,
        "active": record.active,
        "admin": record.admin,
        "services": list(record.services),
        "keys": _key_summaries(record),
        "version": record.version,
        "created_at": record.created_at.isoformat() if record.created_at else None,
        "updated_at": record.updated_at.isoformat() if record.updated_at else None,
    }


def _print_users(records: Sequence[User], output: str) -> None:
    if output == "json":
        print_json([user_summary(r) for r in records])
        return
    rows: list[list[Any]] = []
    for record in records:
        first = [
            record.name,
            "yes" if record.active else "no",
            "yes" if record.admin else "no",
            ", ".join(record.services) or "-",
        ]
        keys = _key_summaries(record) or [{"type": "-", "fingerprint": "-", "comment": ""}]
        for number, key in enumerate(keys):
            prefix = first if number == 0 else ["", "", "", ""]
            rows.append([*prefix, key["fingerprint"], key["type"], key["comment"]])
    print_table(["NAME", "ACTIVE", "ADMIN", "SERVICES", "KEY", "TYPE", "COMMENT"], rows)


def _show(record: User, output: str) -> None:
    if output == "json":
        print_json(user_summary(record))
    else:
        _print_users([record], output)


# --- commands ---------------------------------------------------------------------------


@click.group(short_help="Manage who may log in to which instances by SSH.")
def user() -> None:
    """Manage who may log in by SSH to which services' instances (see `flotilla keys`)."""


@user.command(short_help="Add a user, or keys, services or admin rights.")
@click.argument("name")
@click.option(
    "--key",
    "key_sources",
    multiple=True,
    metavar="FILE|-",
    help="An OpenSSH public key file (.pub; several lines allowed), '-' for standard input. "
    "Repeatable. Private keys are refused.",
)
@click.option(
    "--service",
    "services",
    multiple=True,
    metavar="SERVICE",
    help="A service whose instances the user may reach (it must exist). Repeatable.",
)
@click.option("--admin", is_flag=True, help="The user may reach every service's instances.")
@output_option
@aws_options
def add(
    name: str,
    key_sources: tuple[str, ...],
    services: tuple[str, ...],
    admin: bool,
    output: str,
    **options: Any,
) -> None:
    """Add the user NAME, or add keys, services or admin rights to it (idempotent).

    Adding what a user has already changes nothing.
    """
    users.user_name(name)
    wanted = [validation.service_name(s) for s in services]
    keys = read_keys(key_sources)  # everything is checked before any AWS call
    wiring = wiring_from(options)
    for service in wanted:  # a typo must not grant access to a service that does not exist
        find_service(wiring.store, service, wiring.settings.environment)
    found = read_user_everywhere(wiring, name)
    missing = [region for region, record in found.items() if record is None]
    if missing and not keys:
        where = "" if len(missing) == len(found) else f" in {', '.join(missing)}"
        raise ValidationError(
            f"user {name!r} is new{where} and needs at least one public key: give --key FILE"
        )

    def add_in(store: UserStore, current: User | None) -> User:
        if current is None:
            record = users.user(User(name, services=tuple(wanted), admin=admin))
            try:
                return store.put_user(users.user(users.with_keys(record, keys)))
            except AlreadyExistsError:  # added by someone else meanwhile: add to theirs
                current = store.get_user(name)
        return modify_user(store, current, lambda u: _add_to(u, keys, wanted, admin))

    added = write_user_everywhere(wiring, found, add_in, output)
    assert added is not None
    _show(added, output)


def _fingerprint_text(value: str) -> str:
    text = value.strip()
    return text if text.startswith("SHA256:") else "SHA256:" + text


def _without(
    current: User, fingerprints: Sequence[str], services: Sequence[str], admin: bool
) -> User:
    """`current` without those keys, services and admin rights (those it has)."""
    gone = {line for line in current.ssh_keys if _fingerprint_of(line) in fingerprints}
    return replace(
        current,
        ssh_keys=tuple(line for line in current.ssh_keys if line not in gone),
        services=tuple(s for s in current.services if s not in services),
        admin=current.admin and not admin,
    )


def _fingerprint_of(line: str) -> str | None:
    try:
        return users.fingerprint(line)
    except ValidationError:  # a malformed stored key: it has no fingerprint to name
        return None


def _check_held(
    records: Sequence[User], fingerprints: Sequence[str], services: Sequence[str]
) -> None:
    """Refuse to remove a key or a service that no region's record has (a region that
    lacks it already may be one an earlier run finished)."""
    have = {_fingerprint_of(line) for record in records for line in record.ssh_keys}
    name = records[0].name
    for fingerprint in fingerprints:
        if fingerprint not in have:
            raise NotFoundError(
                f"user {name!r} has no key {fingerprint}; `flotilla user list` "
                "shows the fingerprints of its keys"
            )
    granted = {service for record in records for service in record.services}
    for service in services:
        if service not in granted:
            raise NotFoundError(f"user {name!r} has no access to service {service!r}")


@user.command(short_help="Remove a user, or some of its keys or rights.")
@click.argument("name")
@click.option(
    "--key",
    "fingerprints",
    multiple=True,
    metavar="FINGERPRINT",
    help="Remove only this key (its SHA256:... fingerprint, as `user list` shows). Repeatable.",
)
@click.option(
    "--service",
    "services",
    multiple=True,
    metavar="SERVICE",
    help="Remove only the access to this service. Repeatable.",
)
@click.option("--admin", is_flag=True, help="Remove only the admin rights.")
@output_option
@aws_options
def remove(
    name: str,
    fingerprints: tuple[str, ...],
    services: tuple[str, ...],
    admin: bool,
    output: str,
    **options: Any,
) -> None:
    """Remove the user NAME, or only some of its keys, services or admin rights."""
    users.user_name(name)
    wanted_keys = [_fingerprint_text(f) for f in fingerprints]
    wanted_services = [validation.service_name(s) for s in services]
    wiring = wiring_from(options)
    found = existing_everywhere(wiring, name)
    if wanted_keys or wanted_services or admin:
        _check_held([r for r in found.values() if r], wanted_keys, wanted_services)

        def remove_parts(store: UserStore, current: User | None) -> User | None:
            if current is None:  # not in this region: nothing of it to remove here
                return None
            return modify_user(
                store, current, lambda u: _without(u, wanted_keys, wanted_services, admin)
            )

        changed = write_user_everywhere(wiring, found, remove_parts, output)
        assert changed is not None  # some region has the user (`existing_everywhere`)
        _show(changed, output)
        return
    write_user_everywhere(
        wiring, found, lambda store, current: _delete(store, name, current), output, "removed"
    )
    if output == "json":
        print_json({"removed": name})
    else:
        click.echo(f"removed user {name}")


def _delete(store: UserStore, name: str, current: User | None) -> None:
    """Delete the user as read, unless it changed meanwhile (then its newer version)."""
    for _ in range(MAX_ATTEMPTS):
        if current is None:
            return  # not in this region: removed already
        try:
            store.delete_user(name, expected_version=current.version)
            return
        except ConflictError as conflict:
            if not isinstance(conflict.current, User):
                raise
            current = conflict.current
    raise ConflictError(f"user {name!r} kept changing; try again in a moment")


@user.command("list", short_help="List users, their services and key fingerprints.")
@output_option
@aws_options
def list_(output: str, **options: Any) -> None:
    """List users, their services and their keys' fingerprints (never whole keys)."""
    _print_users(wiring_from(options).users.list_users(), output)


def _set_active(name: str, active: bool, output: str, options: dict[str, Any]) -> None:
    users.user_name(name)
    wiring = wiring_from(options)
    found = existing_everywhere(wiring, name)
    missing = [region for region, record in found.items() if record is None]
    if missing:
        raise NotFoundError(
            f"user {name!r} is missing in {', '.join(missing)} (an earlier command stopped "
            f"before it?): add it there again with `flotilla user add {name} --key FILE`"
        )

    def set_in(store: UserStore, current: User | None) -> User:
        assert current is not None
        return modify_user(store, current, lambda u: replace(u, active=active))

    changed = write_user_everywhere(wiring, found, set_in, output)
    assert changed is not None
    _show(changed, output)


@user.command(short_help="Stop printing a user's keys for sshd.")
@click.argument("name")
@output_option
@aws_options
def deactivate(name: str, output: str, **options: Any) -> None:
    """Stop printing NAME's keys for sshd, keeping its record (undo with `activate`)."""
    _set_active(name, False, output, options)


@user.command(short_help="Print a user's keys for sshd again.")
@click.argument("name")
@output_option
@aws_options
def activate(name: str, output: str, **options: Any) -> None:
    """Print NAME's keys for sshd again."""
    _set_active(name, True, output, options)
