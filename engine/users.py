"""SSH access: who may log in to which service's instances, with which public keys.

A `User` holds OpenSSH public key lines and the services whose instances it may reach
(`admin` reaches all). `flotilla keys`, run by sshd as its `AuthorizedKeysCommand`,
prints the keys of the active users allowed on an instance's service.

Key lines are checked strictly before anything is stored, and again before any is
printed for sshd: a known type, a base64 body that decodes to a well-formed key blob of
that same type, an optional one-line comment, no `authorized_keys` options. A private
key is refused by name, and never echoed back: error messages show at most a key's type.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flotilla.engine.errors import ValidationError
from flotilla.engine.validation import service_name


@dataclass(frozen=True)
class User:
    """A person (or robot) who may log in by SSH to the instances of some services."""

    name: str
    ssh_keys: tuple[str, ...] = ()  # normalised OpenSSH public key lines: "TYPE BASE64 [COMMENT]"
    services: tuple[str, ...] = ()  # services whose instances this user may reach
    admin: bool = False  # reaches every service
    active: bool = True  # an inactive user keeps its record but gets no keys printed
    version: int = 0  # 0: not stored yet; bumped by every stored change
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def may_reach(self, service: str | None) -> bool:
        """Whether sshd should accept this user's keys on an instance of `service`.

        Without a service (a bastion, say), only admins get in.
        """
        if not self.active:
            return False
        return self.admin or (service is not None and service in self.services)


# --- names ---------------------------------------------------------------------------

# A login name as Debian's adduser accepts it (NAME_REGEX), at most 32 characters: no
# shell metacharacters, nothing sshd's %u could smuggle into a command line.
_USER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def user_name(value: Any) -> str:
    if not isinstance(value, str) or not _USER_NAME.fullmatch(value):
        raise ValidationError(
            f"invalid user name {_short(value)}: use 1-32 lowercase letters, digits, '_' and "
            "'-', starting with a letter (a login name, e.g. 'alice')"
        )
    return value


# --- public keys ---------------------------------------------------------------------

# type -> the fields of its key blob after the type string (RFC 4253, 5656, 8709 and
# OpenSSH's PROTOCOL.u2f): "string" fields, "curve" (a string that must name the type's
# curve), "mpint", "point" (an uncompressed EC point of the curve's size).
_CURVES = {"nistp256": 65, "nistp384": 97, "nistp521": 133}
KEY_TYPES: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ed25519",),
    "ssh-rsa": ("mpint", "mpint"),
    "ecdsa-sha2-nistp256": ("curve", "point"),
    "ecdsa-sha2-nistp384": ("curve", "point"),
    "ecdsa-sha2-nistp521": ("curve", "point"),
    "sk-ssh-ed25519@openssh.com": ("ed25519", "string"),
    "sk-ecdsa-sha2-nistp256@openssh.com": ("curve", "point", "string"),
}
MIN_RSA_BITS = 2048
MAX_KEY_LINE = 8192  # a 16384-bit RSA key is under 3 KB of base64
MAX_COMMENT = 256
# Keeps a user's item far below DynamoDB's 400 KB even with 16384-bit RSA keys.
MAX_KEYS_PER_USER = 50
MAX_SERVICES_PER_USER = 500
_OPENSSH_PRIVATE_BODY = base64.b64encode(b"openssh-key-v1\x00")[:16].decode()
_PRIVATE_MARKERS = ("PRIVATE KEY", "PuTTY-User-Key-File", _OPENSSH_PRIVATE_BODY)

PRIVATE_KEY_REFUSED = (
    "this is a PRIVATE key, which must never leave its owner's machine: give the public "
    "key instead (the .pub file, e.g. ~/.ssh/id_ed25519.pub), and if this private key was "
    "shared anywhere, replace it"
)


@dataclass(frozen=True)
class PublicKey:
    """One validated public key."""

    type: str
    blob: bytes
    comment: str = ""

    @property
    def line(self) -> str:
        """The normalised `authorized_keys` line."""
        body = base64.b64encode(self.blob).decode("ascii")
        return f"{self.type} {body} {self.comment}".rstrip()

    @property
    def fingerprint(self) -> str:
        """As `ssh-keygen -l` prints it: SHA256 of the blob, unpadded base64."""
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode("ascii")
        return "SHA256:" + digest.rstrip("=")


def looks_private(text: str) -> bool:
    return any(marker in text for marker in _PRIVATE_MARKERS)


def public_key(line: Any) -> PublicKey:
    """One `authorized_keys` line (no options), checked down to the key blob."""
    if not isinstance(line, str):
        raise ValidationError(f"an SSH public key must be text, not {type(line).__name__}")
    if looks_private(line):
        raise ValidationError(PRIVATE_KEY_REFUSED)
    if any(not (ch.isprintable() or ch == "\t") for ch in line):
        raise ValidationError(
            "an SSH public key line contains a line break or a control character; give "
            "exactly one key per line"
        )
    if len(line) > MAX_KEY_LINE:
        raise ValidationError(f"an SSH public key line is over {MAX_KEY_LINE} characters")
    parts = line.replace("\t", " ").split()
    if not parts:
        raise ValidationError("an SSH public key line is empty")
    key_type = parts[0]
    if key_type not in KEY_TYPES:
        raise ValidationError(_unknown_type(parts))
    if len(parts) < 2:
        raise ValidationError(f"the {key_type} key has no base64 body after its type")
    comment = " ".join(parts[2:])
    if len(comment) > MAX_COMMENT:
        raise ValidationError(f"the comment of a {key_type} key is over {MAX_COMMENT} characters")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"the body of a {key_type} key is not valid base64") from exc
    if base64.b64encode(blob).decode("ascii") != parts[1]:
        raise ValidationError(f"the body of a {key_type} key is not canonical base64")
    _check_blob(key_type, blob)
    return PublicKey(key_type, blob, comment)


def _unknown_type(parts: list[str]) -> str:
    accepted = ", ".join(sorted(KEY_TYPES))
    if parts[0] in ("ssh-dss", "ssh-dsa"):
        return "DSA keys are insecure and OpenSSH no longer accepts them; use ssh-ed25519"
    if parts[0].startswith("----"):
        return (
            "this looks like an RFC 4716 (SSH2) or PEM key file; convert it to one OpenSSH "
            "line with `ssh-keygen -i -f FILE`"
        )
    if any(part in KEY_TYPES for part in parts[1:]):
        return (
            "authorized_keys options (from=, command=, ...) are not accepted; give the bare "
            f"public key line starting with its type ({accepted})"
        )
    return f"not an OpenSSH public key line: it must start with one of {accepted}"


class _Blob:
    """Reads the SSH wire encoding (RFC 4251): uint32-length-prefixed strings."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def string(self) -> bytes:
        if self.offset + 4 > len(self.data):
            raise ValueError("truncated length")
        size = int.from_bytes(self.data[self.offset : self.offset + 4], "big")
        start = self.offset + 4
        if start + size > len(self.data):
            raise ValueError("truncated field")
        self.offset = start + size
        return self.data[start : self.offset]

    @property
    def finished(self) -> bool:
        return self.offset == len(self.data)


def _check_blob(key_type: str, blob: bytes) -> None:
    reader = _Blob(blob)
    curve = key_type.removesuffix("@openssh.com").rsplit("-", 1)[-1]
    try:
        embedded = reader.string()
        if embedded != key_type.encode("ascii"):
            raise ValidationError(
                f"the body of a {key_type} key holds a key of another type; the type at the "
                "start of the line must match the key"
            )
        integers: list[int] = []
        for field in KEY_TYPES[key_type]:
            value = reader.string()
            if field == "ed25519" and len(value) != 32:
                raise ValueError("an ed25519 key is 32 bytes")
            if field == "curve" and value != curve.encode("ascii"):
                raise ValueError("wrong curve")
            if field == "point" and (len(value) != _CURVES[curve] or value[:1] != b"\x04"):
                raise ValueError("not an uncompressed point of the curve")
            if field == "mpint":
                integers.append(int.from_bytes(value, "big", signed=True))
        if not reader.finished:
            raise ValueError("trailing bytes")
    except ValueError as exc:
        raise ValidationError(
            f"the body of a {key_type} key is not a well-formed key ({exc}); copy the whole "
            "line of the .pub file"
        ) from exc
    if key_type == "ssh-rsa":
        exponent, modulus = integers
        if exponent < 3 or modulus.bit_length() < MIN_RSA_BITS:
            raise ValidationError(
                f"this RSA key has {modulus.bit_length()} bits; give one of at least "
                f"{MIN_RSA_BITS} bits, or better an ssh-ed25519 key"
            )


def public_keys_text(text: str, source: str) -> list[PublicKey]:
    """Every key of a .pub or authorized_keys-like text: blank and '#' lines are skipped."""
    if looks_private(text):
        raise ValidationError(f"{source}: {PRIVATE_KEY_REFUSED}")
    keys = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(public_key(line))
        except ValidationError as exc:
            raise ValidationError(f"{source}, line {number}: {exc.message}") from exc
    if not keys:
        raise ValidationError(f"{source} holds no SSH public key")
    return keys


def fingerprint(line: str) -> str:
    return public_key(line).fingerprint


# --- whole records -------------------------------------------------------------------


def user(record: User) -> User:
    """A whole user as the CLI built it: name, keys (normalised), services, flags."""
    keys = [public_key(line) for line in record.ssh_keys]
    seen: set[bytes] = set()
    lines = []
    for key in keys:
        if key.blob not in seen:  # the same key twice (comments aside) is stored once
            seen.add(key.blob)
            lines.append(key.line)
    services = tuple(dict.fromkeys(service_name(s) for s in record.services))
    if len(lines) > MAX_KEYS_PER_USER or len(services) > MAX_SERVICES_PER_USER:
        raise ValidationError(
            f"user {record.name!r} would have {len(lines)} keys and {len(services)} services; "
            f"at most {MAX_KEYS_PER_USER} keys and {MAX_SERVICES_PER_USER} services (make it "
            "an admin instead of listing every service)"
        )
    if not isinstance(record.admin, bool) or not isinstance(record.active, bool):
        raise ValidationError("admin and active are yes/no flags")
    return _replace(record, name=user_name(record.name), keys=tuple(lines), services=services)


def _replace(record: User, *, name: str, keys: tuple[str, ...], services: tuple[str, ...]) -> User:
    return User(
        name=name,
        ssh_keys=keys,
        services=services,
        admin=record.admin,
        active=record.active,
        version=record.version,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def with_keys(record: User, keys: Iterable[PublicKey]) -> User:
    """`record` with `keys` appended; a key it has already is not added twice."""
    have = {public_key(line).blob for line in record.ssh_keys}
    added = []
    for key in keys:
        if key.blob not in have:
            have.add(key.blob)
            added.append(key.line)
    return _replace(
        record, name=record.name, keys=(*record.ssh_keys, *added), services=record.services
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
