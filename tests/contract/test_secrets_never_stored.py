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
    """Every record that reaches the root, formatted, with the logger that made it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.loggers: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.loggers.add(record.name)


# Loggers botocore creates lazily; named here so they exist, and are at DEBUG, before a call.
_WATCHED = ("botocore", "boto3", "urllib3", "moto", "flotilla")


@pytest.fixture
def all_logs() -> Iterator[Everything]:
    """Every logger at DEBUG and propagating to one collecting handler; restored after."""
    handler = Everything()
    root = logging.getLogger()
    for name in _WATCHED:
        logging.getLogger(name)
    loggers = [root] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.propagate, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.propagate = True
        logger.disabled = False
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, level, propagate, disabled in saved:
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled


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
    """GenerateDataKey's and Decrypt's responses carry the plaintext data key."""
    from moto import mock_aws

    value = secrets.token_hex(16)
    with mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        seen: list[bytes] = []
        kms.meta.events.register(
            "after-call.kms.*", lambda parsed, **_: seen.append(bytes(parsed["Plaintext"]))
        )
        box = KmsSecretBox(kms, key_id)
        sealed = box.seal("api", {"web.service": {"DB_PASSWORD": value}})
        assert box.open("api", sealed) == {"web.service": {"DB_PASSWORD": value}}
    assert len(seen) == 2
    assert seen[0] == seen[1]  # the same data key, generated then decrypted
    logs = "\n".join(all_logs.lines)
    # botocore.parsers is where response bodies are logged; its other lines must have been
    # captured, or this test would pass for want of looking.
    assert "botocore.parsers" in all_logs.loggers, "botocore's DEBUG lines were not captured"
    assert "GenerateDataKey" in logs
    assert "Decrypt" in logs
    data_key = seen[0]
    for form in (
        base64.b64encode(data_key).decode(),
        data_key.hex(),
        repr(data_key)[2:-1],  # as a bytes repr would show it
        data_key.decode("latin-1"),
        *(f.decode() for f in forms_of(value)),
    ):
        assert form not in logs
