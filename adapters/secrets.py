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

Binding to the revision (scheme 2, issue 14). A revision's id is the sha256 of its stored
content INCLUDING the ciphertexts (engine/revisions.py), so the id cannot be inside the data
it hashes. What is bound instead is everything about the revision that is fixed before
sealing: its label and the digest of its unit files (`RevisionBinding.units_digest`: the
sha256 of the service and units, i.e. the id the revision would have had with no
environment). Both go into the AEAD associated data of every blob and into the KMS
encryption context (`flotilla:label`, `flotilla:units`, next to `flotilla:service`), so they
show in CloudTrail for every Decrypt, and an environment sealed for one revision does not
open in another: KMS refuses the data key under the other context, and the AEAD refuses the
blobs (the same check for the local box, whose wrapping takes the context as associated
data). Two revisions with the same label and unit files differ only in their environment;
moving one's environment into the other gives exactly the first revision's content, whose
hash is not the second's id: the agent's id check (engine/deploy/adoption.py) refuses that.
The scheme is stored with the sealed environment and hashed into the id, so it cannot be
flipped. Older environments (scheme 1, sealed without the binding) still open, bound to
service and unit only: a revision is never re-sealed, and refusing them would strand every
rollback to an older revision; re-adding one seals it under scheme 2.
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
from flotilla.engine.records import BOUND_SCHEME, RevisionBinding, SealedBlob, SealedEnvironment

CONTEXT_KEY = "flotilla:service"
LABEL_KEY = "flotilla:label"
UNITS_KEY = "flotilla:units"
NONCE_BYTES = 12
LEGACY_SCHEME = 1


def _encryption_context(service: str, binding: RevisionBinding | None) -> dict[str, str]:
    """KMS's encryption context (the local box's wrapping associated data)."""
    context = {CONTEXT_KEY: service}
    if binding is not None:
        context.update({LABEL_KEY: binding.label, UNITS_KEY: binding.units_digest})
    return context


def _associated_data(service: str, unit: str, binding: RevisionBinding | None) -> bytes:
    data = {"service": service, "unit": unit}
    if binding is not None:
        data.update({"label": binding.label, "units": binding.units_digest})
    return json.dumps(data, sort_keys=True).encode()


def _binding_to_use(
    service: str, sealed: SealedEnvironment, binding: RevisionBinding | None
) -> RevisionBinding | None:
    """The binding a sealed environment is opened with: none for scheme 1; for scheme 2 the
    caller's (the revision it is found in), which must be given."""
    if sealed.scheme == LEGACY_SCHEME:
        return None
    if sealed.scheme != BOUND_SCHEME:
        raise SecretError(
            f"the environment of a revision of {service!r} is sealed with scheme "
            f"{sealed.scheme}, which this flotilla does not know; upgrade flotilla"
        )
    if binding is None:
        raise SecretError(
            f"the environment of a revision of {service!r} is bound to its revision, and "
            "no revision was given to open it with"
        )
    return binding


def _seal_with(
    data_key: bytes,
    encrypted_data_key: bytes,
    key_id: str,
    service: str,
    environments: Mapping[str, Mapping[str, str]],
    binding: RevisionBinding | None,
) -> SealedEnvironment:
    cipher = AESGCM(data_key)
    blobs: dict[str, SealedBlob] = {}
    names: dict[str, tuple[str, ...]] = {}
    for unit, variables in environments.items():
        nonce = os.urandom(NONCE_BYTES)
        plaintext = json.dumps(dict(variables), sort_keys=True, separators=(",", ":")).encode()
        blobs[unit] = SealedBlob(
            nonce, cipher.encrypt(nonce, plaintext, _associated_data(service, unit, binding))
        )
        names[unit] = tuple(sorted(variables))
    scheme = LEGACY_SCHEME if binding is None else BOUND_SCHEME
    return SealedEnvironment(key_id, encrypted_data_key, blobs, names, scheme=scheme)


def _open_with(
    data_key: bytes, service: str, sealed: SealedEnvironment, binding: RevisionBinding | None
) -> dict[str, dict[str, str]]:
    cipher = AESGCM(data_key)
    opened: dict[str, dict[str, str]] = {}
    for unit, blob in sealed.blobs.items():
        associated = _associated_data(service, unit, binding)
        try:
            plaintext = cipher.decrypt(blob.nonce, blob.ciphertext, associated)
        except (InvalidTag, ValueError) as exc:
            raise SecretError(
                f"the environment of {unit} does not open for service {service!r}"
                + ("" if binding is None else f", revision {binding.label!r}")
                + ": it was altered, or belongs to another unit or service (or revision)"
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
        self,
        service: str,
        environments: Mapping[str, Mapping[str, str]],
        binding: RevisionBinding | None = None,
    ) -> SealedEnvironment:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + self._master.encrypt(nonce, data_key, _context(service, binding))
        return _seal_with(data_key, wrapped, self._key_id, service, environments, binding)

    def open(
        self, service: str, sealed: SealedEnvironment, binding: RevisionBinding | None = None
    ) -> dict[str, dict[str, str]]:
        bound = _binding_to_use(service, sealed, binding)
        wrapped = sealed.encrypted_data_key
        try:
            data_key = self._master.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _context(service, bound)
            )
        except (InvalidTag, ValueError) as exc:
            raise SecretError(
                f"the data key does not open for service {service!r}: the revision belongs "
                "to another service (or, bound, to another revision), or was altered"
            ) from exc
        return _open_with(data_key, service, sealed, bound)


def _context(service: str, binding: RevisionBinding | None) -> bytes:
    return json.dumps(_encryption_context(service, binding), sort_keys=True).encode()


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
        self,
        service: str,
        environments: Mapping[str, Mapping[str, str]],
        binding: RevisionBinding | None = None,
    ) -> SealedEnvironment:
        context = _encryption_context(service, binding)
        response = self._call(
            "generating a data key",
            lambda: self._kms.generate_data_key(
                KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=context
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
                binding,
            )
        finally:
            del data_key, response  # drop the plaintext key as soon as it is used

    def open(
        self, service: str, sealed: SealedEnvironment, binding: RevisionBinding | None = None
    ) -> dict[str, dict[str, str]]:
        bound = _binding_to_use(service, sealed, binding)
        context = _encryption_context(service, bound)
        response = self._call(
            "decrypting the data key",
            # Naming the key that sealed it is KMS's own advice: Decrypt then refuses a data
            # key wrapped by any other key instead of trying whatever the blob names.
            lambda: self._kms.decrypt(
                CiphertextBlob=sealed.encrypted_data_key,
                KeyId=sealed.key_id,
                EncryptionContext=context,
            ),
            service=service,
        )
        data_key = bytes(response["Plaintext"])
        try:
            return _open_with(data_key, service, sealed, bound)
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
                    f"{what}: KMS refused it for service {service!r} ({code}); the sealed "
                    "environment belongs to another service or key (or revision), was "
                    "altered, or this role may not decrypt for that service"
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
