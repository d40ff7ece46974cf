"""A secret value appears in no stored item and no log line, on every backend."""

from __future__ import annotations

import base64
import logging
import os
import secrets
from collections.abc import Iterator

import boto3
import pytest

from flotilla.adapters.secrets import KmsSecretBox, LocalSecretBox
from flotilla.engine.ports import SecretBox
from flotilla.engine.revisions import build_revision
from tests.contract.conftest import Backend


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in ("botocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def secret_box_for(backend: Backend) -> SecretBox:
    if backend.kind == "moto":  # moto is active for this backend: use its KMS
        kms = boto3.client("kms", region_name="us-east-1")
        return KmsSecretBox(kms, kms.create_key()["KeyMetadata"]["KeyId"])
    return LocalSecretBox(os.urandom(32))


def forms_of(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, raw.hex().encode(), base64.b64encode(raw)]


def test_a_secret_is_nowhere_in_the_tables_or_the_logs(
    backend: Backend, all_logs: Everything
) -> None:
    password = secrets.token_hex(16)
    revision = build_revision(
        "api",
        "v1",
        {"web.service": "[Service]\nExecStart=/usr/bin/web\n"},
        {"web.service": {"DB_PASSWORD": password}},
        secret_box_for(backend),
        backend.clock.now(),
    )
    backend.store.put_revision(revision)
    stored = backend.store.get_revision("api", revision.id)
    assert stored == revision
    dump = repr(backend.scan_everything()).encode()
    logs = "\n".join(all_logs.lines).encode()
    assert any("DB_PASSWORD" in line for line in all_logs.lines), "no log line about the revision"
    for form in forms_of(password):
        assert form not in dump
        assert form not in logs


def test_the_kms_data_key_never_reaches_the_logs(all_logs: Everything) -> None:
    from moto import mock_aws

    with mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        seen: list[bytes] = []
        kms.meta.events.register(
            "after-call.kms.GenerateDataKey",
            lambda parsed, **_: seen.append(bytes(parsed["Plaintext"])),
        )
        KmsSecretBox(kms, key_id).seal("api", {"web.service": {"A": "b"}})
    assert len(seen) == 1
    logs = "\n".join(all_logs.lines)
    assert "kms" in logs.lower(), (
        "botocore's DEBUG lines were not captured; the test proves nothing"
    )
    for form in (seen[0], base64.b64encode(seen[0]), seen[0].hex().encode()):
        assert form.decode("latin-1") not in logs
