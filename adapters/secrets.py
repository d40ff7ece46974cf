"""Envelope encryption of revision environments: KMS for real, a local master key for tests.

Why `cryptography` with KMS GenerateDataKey rather than the AWS Encryption SDK: one
explicit data key per revision, shared by its units (the SDK would want a caching
materials manager for that), no extra message format to store, far fewer dependencies,
and KMS itself binds the encryption context: a data key generated for service A does
not decrypt under service B's context, so one service's instances cannot read another's.

Each unit's variables are canonical JSON, sealed with AES-256-GCM under the revision's
data key, a fresh 12-byte nonce per unit, and associated data naming the service and the
unit, so a blob moved to another unit or service fails to open. Variable names are kept
in the clear for `revision show`; values never leave the ciphertext except on an instance.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from flotilla.adapters.aws_errors import NO_CREDENTIALS_HINT, error_code, is_transient
from flotilla.engine.errors import ConfigurationError, SecretError, TransientError
from flotilla.engine.records import SealedBlob, SealedEnvironment

CONTEXT_KEY = "flotilla:service"
NONCE_BYTES = 12


def _associated_data(service: str, unit: str) -> bytes:
    return json.dumps({"service": service, "unit": unit}, sort_keys=True).encode()


def _seal_with(
    data_key: bytes,
    encrypted_data_key: bytes,
    key_id: str,
    service: str,
    environments: Mapping[str, Mapping[str, str]],
) -> SealedEnvironment:
    cipher = AESGCM(data_key)
    blobs: dict[str, SealedBlob] = {}
    names: dict[str, tuple[str, ...]] = {}
    for unit, variables in environments.items():
        nonce = os.urandom(NONCE_BYTES)
        plaintext = json.dumps(dict(variables), sort_keys=True, separators=(",", ":")).encode()
        blobs[unit] = SealedBlob(
            nonce, cipher.encrypt(nonce, plaintext, _associated_data(service, unit))
        )
        names[unit] = tuple(sorted(variables))
    return SealedEnvironment(key_id, encrypted_data_key, blobs, names)


def _open_with(
    data_key: bytes, service: str, sealed: SealedEnvironment
) -> dict[str, dict[str, str]]:
    cipher = AESGCM(data_key)
    opened: dict[str, dict[str, str]] = {}
    for unit, blob in sealed.blobs.items():
        try:
            plaintext = cipher.decrypt(blob.nonce, blob.ciphertext, _associated_data(service, unit))
        except (InvalidTag, ValueError) as exc:
            raise SecretError(
                f"the environment of {unit} does not open for service {service!r}: it was "
                "altered, or belongs to another unit or service"
            ) from exc
        opened[unit] = {str(k): str(v) for k, v in json.loads(plaintext).items()}
    return opened


class LocalSecretBox:
    """The same envelope scheme with the data key wrapped by a local master key.

    For unit tests and simulations; the encryption context is the wrapping's associated
    data, so it refuses another service exactly as KMS does.
    """

    def __init__(self, master_key: bytes, key_id: str = "local") -> None:
        if len(master_key) != 32:
            raise ConfigurationError("the local master key must be 32 bytes")
        self._master = AESGCM(master_key)
        self._key_id = key_id

    def seal(
        self, service: str, environments: Mapping[str, Mapping[str, str]]
    ) -> SealedEnvironment:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + self._master.encrypt(nonce, data_key, _context(service))
        return _seal_with(data_key, wrapped, self._key_id, service, environments)

    def open(self, service: str, sealed: SealedEnvironment) -> dict[str, dict[str, str]]:
        wrapped = sealed.encrypted_data_key
        try:
            data_key = self._master.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _context(service)
            )
        except (InvalidTag, ValueError) as exc:
            raise SecretError(
                f"the data key does not open for service {service!r}: the revision belongs "
                "to another service, or was altered"
            ) from exc
        return _open_with(data_key, service, sealed)


def _context(service: str) -> bytes:
    return json.dumps({CONTEXT_KEY: service}).encode()


class _DropResponseBodies(logging.Filter):
    """botocore logs response bodies at DEBUG; GenerateDataKey's holds the plaintext key."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.DEBUG and "body" in str(record.msg).lower())


_BODY_LOGGERS = ("botocore.parsers", "botocore.endpoint", "botocore.hooks", "botocore.httpsession")
_body_filter = _DropResponseBodies()


def _guard_botocore_logs() -> None:
    for name in _BODY_LOGGERS:
        logger = logging.getLogger(name)
        if _body_filter not in logger.filters:
            logger.addFilter(_body_filter)


class KmsSecretBox:
    """`SecretBox` with data keys from KMS, bound to the service by encryption context."""

    def __init__(self, kms_client: Any, key_id: str) -> None:
        self._kms = kms_client
        self._key_id = key_id
        _guard_botocore_logs()

    def seal(
        self, service: str, environments: Mapping[str, Mapping[str, str]]
    ) -> SealedEnvironment:
        response = self._call(
            "generating a data key",
            lambda: self._kms.generate_data_key(
                KeyId=self._key_id, KeySpec="AES_256", EncryptionContext={CONTEXT_KEY: service}
            ),
        )
        data_key = bytes(response["Plaintext"])
        try:
            return _seal_with(
                data_key,
                bytes(response["CiphertextBlob"]),
                str(response["KeyId"]),
                service,
                environments,
            )
        finally:
            del data_key, response  # drop the plaintext key as soon as it is used

    def open(self, service: str, sealed: SealedEnvironment) -> dict[str, dict[str, str]]:
        response = self._call(
            "decrypting the data key",
            # Naming the key that sealed it is KMS's own advice: Decrypt then refuses a data
            # key wrapped by any other key instead of trying whatever the blob names.
            lambda: self._kms.decrypt(
                CiphertextBlob=sealed.encrypted_data_key,
                KeyId=sealed.key_id,
                EncryptionContext={CONTEXT_KEY: service},
            ),
            service=service,
        )
        data_key = bytes(response["Plaintext"])
        try:
            return _open_with(data_key, service, sealed)
        finally:
            del data_key, response

    def _call(self, what: str, call: Any, service: str | None = None) -> Any:
        try:
            return call()
        except ClientError as exc:
            code = error_code(exc)
            if is_transient(exc):
                raise TransientError(f"{what}: KMS is throttling or unavailable ({code})") from exc
            refused = {"InvalidCiphertextException", "IncorrectKeyException"}
            if service is not None:
                # On Decrypt, access denied is what IAM says to a role bound to another
                # service's encryption context: the same refusal as a wrong context.
                refused.add("AccessDeniedException")
            if code in refused:
                raise SecretError(
                    f"{what}: KMS refused it for service {service!r} ({code}); the revision "
                    "belongs to another service or key, was altered, or this role may not "
                    "decrypt for that service"
                ) from exc
            if code in {
                "AccessDeniedException",
                "NotFoundException",
                "DisabledException",
                "KMSInvalidStateException",
            }:
                raise ConfigurationError(
                    f"{what}: KMS answered {code}; check the environment's key and this role's "
                    "permission to use it"
                ) from exc
            raise SecretError(f"{what}: KMS answered {code}") from exc
        except (ConnectionError, HTTPClientError) as exc:
            raise TransientError(f"{what}: cannot reach KMS ({type(exc).__name__})") from exc
        except (NoCredentialsError, PartialCredentialsError, NoRegionError) as exc:
            raise ConfigurationError(
                f"{what}: no usable AWS credentials or region ({type(exc).__name__}); "
                + NO_CREDENTIALS_HINT
            ) from exc
        except BotoCoreError as exc:
            # Parameter validation and the like: the same call would fail the same way.
            raise SecretError(f"{what}: botocore refused the call ({type(exc).__name__})") from exc
