"""What sshd asks at every login, and its answer: the one place both `flotilla keys` and
the agent's keys socket (`cli.keys_socket`) decide it.

A question names the user logging in (None: every allowed user, for a shared login),
the instance's service (None: admins only) and the shared login account. The answer is
the authorized_keys lines of the active users who may reach that service, read live from
the users table at every login, so a user removed or deactivated is refused at once.
Imports nothing of boto3: sshd waits for this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flotilla.engine import users, validation
from flotilla.engine.errors import NotFoundError, ValidationError

if TYPE_CHECKING:  # imported for types only: sshd waits for these imports
    from flotilla.engine.ports import UserStore

# A local account name, as useradd takes it.
_LOGIN = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Question:
    user: str | None  # None: every allowed user (the shared login, or no USER given)
    service: str | None


@dataclass(frozen=True)
class Answer:
    lines: list[str]
    warnings: list[str]


def question(user: str | None, service: str | None, shared_login: str | None) -> Question | None:
    """The question, checked; None when no such user can exist (nothing to print).
    A bad service or shared login is refused (ValidationError): it is the machine's
    configuration, not the person logging in."""
    allowed = None if service is None else validation.service_name(service)
    if shared_login is not None and not _LOGIN.fullmatch(shared_login):
        raise ValidationError(
            f"invalid --shared-login {shared_login[:40]!r}: a local account name "
            "(lowercase letters, digits, '_' and '-', starting with a letter or '_')"
        )
    if user is not None and user == shared_login:
        user = None  # every allowed user logs in as the shared account
    if user is not None:
        try:
            users.user_name(user)
        except ValidationError:
            return None
    return Question(user, allowed)


def answer(store: UserStore, asked: Question) -> Answer:
    """The keys `asked` is answered with; a users table that cannot be read raises."""
    if asked.user is None:
        candidates = store.list_users()
    else:
        try:
            candidates = [store.get_user(asked.user)]
        except NotFoundError:
            return Answer([], [])
    lines: list[str] = []
    warnings: list[str] = []
    for record in candidates:
        if not record.may_reach(asked.service):
            continue
        for stored in record.ssh_keys:
            try:
                lines.append(users.public_key(stored).line)
            except ValidationError:  # written by something else: skip it, print only keys
                warnings.append(f"skipped a malformed stored key of {record.name}")
    return Answer(lines, warnings)
