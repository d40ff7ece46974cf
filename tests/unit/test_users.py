"""Validation of users and their SSH public keys (engine.users)."""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from flotilla.adapters.items import users as stored_users
from flotilla.engine import users
from flotilla.engine.errors import SchemaError, ValidationError
from flotilla.engine.users import User

OPENSSH = (serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _line(key_type: str, *fields: bytes, comment: str = "") -> str:
    blob = _string(key_type.encode()) + b"".join(_string(f) for f in fields)
    return f"{key_type} {base64.b64encode(blob).decode()} {comment}".rstrip()


def ed25519_line(comment: str = "alice@laptop") -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(*OPENSSH)
    return f"{key.decode()} {comment}".rstrip()


def good_lines() -> dict[str, str]:
    point256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    raw_point = point256.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {
        "ssh-ed25519": ed25519_line(),
        "ssh-rsa": rsa.generate_private_key(65537, 2048)
        .public_key()
        .public_bytes(*OPENSSH)
        .decode(),
        "ecdsa-sha2-nistp256": point256.public_bytes(*OPENSSH).decode() + " ops key",
        "ecdsa-sha2-nistp384": ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(*OPENSSH)
        .decode(),
        "ecdsa-sha2-nistp521": ec.generate_private_key(ec.SECP521R1())
        .public_key()
        .public_bytes(*OPENSSH)
        .decode(),
        "sk-ssh-ed25519@openssh.com": _line(
            "sk-ssh-ed25519@openssh.com", b"\x01" * 32, b"ssh:", comment="yubikey"
        ),
        "sk-ecdsa-sha2-nistp256@openssh.com": _line(
            "sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", raw_point, b"ssh:"
        ),
    }


@pytest.mark.parametrize("key_type", sorted(users.KEY_TYPES))
def test_a_good_key_of_each_type_is_accepted_and_normalised(key_type: str) -> None:
    line = good_lines()[key_type]
    key = users.public_key("  " + line.replace(" ", "\t", 1) + "  ")
    assert key.type == key_type
    assert key.line == line
    assert key.fingerprint.startswith("SHA256:")
    assert not key.fingerprint.endswith("=")


def test_fingerprints_are_those_ssh_keygen_prints(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:  # a failure, never a skip: CI must run this
        pytest.fail("ssh-keygen is not installed: run ./scripts/setup (openssh-client)")
    for number, line in enumerate(good_lines().values()):
        path = tmp_path / f"k{number}.pub"
        path.write_text(line + "\n")
        printed = subprocess.run(
            ["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, check=True
        )
        assert printed.stdout.split()[1] == users.fingerprint(line)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "empty"),
        ("garbage", "not an OpenSSH public key"),
        ("ssh-ed25519", "no base64 body"),
        ("ssh-ed25519 !!!notbase64!!!", "not valid base64"),
        ("ssh-ed25519 AAAA", "not a well-formed key"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "DSA keys"),
        ("---- BEGIN SSH2 PUBLIC KEY ----", "ssh-keygen -i"),
        (_line("ssh-ed25519", b"\x01" * 31), "not a well-formed key"),
        (_line("ssh-ed25519", b"\x01" * 32, b"extra"), "trailing bytes"),
        (_line("ssh-ed25519", b"\x01" * 32).replace("ssh-ed25519", "ssh-rsa", 1), "another type"),
        (_line("ecdsa-sha2-nistp384", b"nistp256", b"\x04" + b"\x01" * 64), "wrong curve"),
        (_line("ecdsa-sha2-nistp256", b"nistp256", b"\x02" + b"\x01" * 32), "uncompressed"),
        (_line("ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xff" * 128), "1024 bits"),
    ],
)
def test_malformed_keys_are_refused_with_a_reason(line: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        users.public_key(line)


def test_key_options_are_refused() -> None:
    with pytest.raises(ValidationError, match="options"):
        users.public_key('command="/bin/sh" ' + ed25519_line())


@pytest.mark.parametrize("injected", ["\n", "\r", "\x00", "\x1b[2J", "\u2028", "\x0b"])
def test_line_breaks_and_control_characters_are_refused(injected: str) -> None:
    second = ed25519_line("mallory")
    with pytest.raises(ValidationError, match="line break or a control character"):
        users.public_key(ed25519_line(f"alice{injected}{second}"))


def test_an_over_long_comment_is_refused() -> None:
    with pytest.raises(ValidationError, match="comment"):
        users.public_key(ed25519_line("x" * 300))


def _private_keys() -> list[str]:
    key = ed25519.Ed25519PrivateKey.generate()
    openssh = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    pkcs8 = (
        rsa.generate_private_key(65537, 2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )
    body_only = "".join(openssh.splitlines()[1:-1])
    return [openssh, pkcs8, body_only, "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n"]


def test_private_keys_are_refused_by_name_and_never_echoed() -> None:
    for private in _private_keys():
        for given, check in (
            (private, lambda text: users.public_keys_text(text, "id_ed25519")),
            (private.splitlines()[0], users.public_key),
        ):
            with pytest.raises(ValidationError, match="PRIVATE key") as raised:
                check(given)
            for secret_line in (line for line in private.splitlines() if len(line) > 30):
                assert secret_line[:20] not in raised.value.message


def test_error_messages_never_echo_the_key_body() -> None:
    body = "QUFBQUMzTnphQzFsWkRJMU5URTVBQUFBSUJZWVlZ"
    for line in (f"ssh-ed25519 {body}", f"bogus {body}", f"ssh-ed25519 {body}!"):
        with pytest.raises(ValidationError) as raised:
            users.public_key(line)
        assert body[:12] not in raised.value.message


def test_a_key_file_skips_comments_and_names_the_bad_line() -> None:
    first, second = ed25519_line("one"), ed25519_line("two")
    keys = users.public_keys_text(f"# my keys\n\n{first}\n{second}\n", "keys.pub")
    assert [k.line for k in keys] == [first, second]
    with pytest.raises(ValidationError, match=r"^keys\.pub, line 2: not an OpenSSH"):
        users.public_keys_text(f"{first}\nnonsense here\n", "keys.pub")
    with pytest.raises(ValidationError, match="holds no SSH public key"):
        users.public_keys_text("# nothing\n\n", "empty.pub")


@pytest.mark.parametrize(
    "name",
    ["", "Alice", "1alice", "-alice", "alice;rm -rf /", "a b", "al$ce", "a`id`", "a|b",
     "../etc", "alice\n", "x" * 33, "root@host", "é"],
)  # fmt: skip
def test_user_names_are_safe_login_names(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid user name"):
        users.user_name(name)


@pytest.mark.parametrize("name", ["alice", "a", "deploy-bot", "svc_ops2", "x" * 32])
def test_plain_login_names_are_accepted(name: str) -> None:
    assert users.user_name(name) == name


def test_a_whole_user_is_normalised_and_its_services_checked() -> None:
    line = ed25519_line("a")
    same_key_other_comment = line.rsplit(" ", 1)[0] + " b"
    checked = users.user(
        User("alice", ssh_keys=(line, same_key_other_comment), services=("api", "api", "web"))
    )
    assert checked.ssh_keys == (line,)
    assert checked.services == ("api", "web")
    with pytest.raises(ValidationError, match="invalid service name"):
        users.user(User("alice", services=("Bad Service",)))


def test_with_keys_appends_only_new_keys() -> None:
    first, second = users.public_key(ed25519_line()), users.public_key(ed25519_line())
    record = users.with_keys(User("alice"), [first])
    assert users.with_keys(record, [first]) == record
    assert users.with_keys(record, [second, first]).ssh_keys == (first.line, second.line)


def test_who_may_reach_a_service() -> None:
    assert User("a", services=("api",)).may_reach("api")
    assert not User("a", services=("api",)).may_reach("web")
    assert not User("a", services=("api",)).may_reach(None)
    assert User("a", admin=True).may_reach("web")
    assert User("a", admin=True).may_reach(None)
    assert not User("a", admin=True, active=False).may_reach("web")


def test_items_round_trip_and_newer_or_malformed_items_are_refused() -> None:
    record = User("alice", ssh_keys=(ed25519_line(),), services=("api",), admin=True, version=3)
    item = stored_users.user_to_item(record)
    assert item["schema"] == stored_users.USER_SCHEMA
    assert stored_users.user_from_item(item) == record
    with pytest.raises(SchemaError, match="newer"):
        stored_users.user_from_item({**item, "schema": stored_users.USER_SCHEMA + 1})
    with pytest.raises(SchemaError, match="malformed"):
        stored_users.user_from_item({**item, "admin": "yes"})
    with pytest.raises(SchemaError, match="no schema"):
        stored_users.user_from_item({k: v for k, v in item.items() if k != "schema"})


def test_a_service_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValidationError, match="invalid service name"):
        users.user(User("alice", services=("api\n",)))


def test_a_user_has_a_bounded_number_of_keys() -> None:
    many = tuple(ed25519_line(f"k{n}") for n in range(users.MAX_KEYS_PER_USER + 1))
    assert len(users.user(User("alice", ssh_keys=many[:-1])).ssh_keys) == len(many) - 1
    with pytest.raises(ValidationError, match=f"at most {users.MAX_KEYS_PER_USER} keys"):
        users.user(User("alice", ssh_keys=many))
