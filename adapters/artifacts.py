"""Flotilla's own wheels in the environment's artifact bucket (S3), content-addressed.

A wheel is stored under `wheels/<sha256 hex>/<file name>`, and its pinned requirements
(cli.dependency_lock) under `wheels/<their sha256>/requirements.txt`: the key names the
bytes (and the instances' role may read that prefix alone), so a
key that is already there holds that wheel and is not uploaded again (one HeadObject
decides), and the stack parameters FlotillaWheel/FlotillaWheelSha256 name exactly what an
instance installs (its user data checks the hash again after fetching it).

The upload carries the wheel's SHA-256 as S3's own checksum (`ChecksumSHA256`): S3 refuses
an upload whose bytes do not match it, so a wheel corrupted on the way is never stored.

botocore's exceptions become engine errors at this edge (`aws_errors`), with the two an
operator meets first said plainly: no bucket (the environment's stack has not made it:
`flotilla init`) and access denied (which permission, on which resource).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from flotilla.adapters.aws_errors import error_code, http_status, translated_errors
from flotilla.engine.errors import ConfigurationError

SERVICE = "S3"
WHEEL_PREFIX = "wheels/"
WHEEL_CONTENT_TYPE = "application/zip"  # a wheel is a zip archive (PEP 427)
# What the templates' FlotillaWheel accepts after `wheels/<sha256>/` (AllowedPattern).
WHEEL_FILE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+[.]whl$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
REQUIREMENTS_FILE = "requirements.txt"
REQUIREMENTS_CONTENT_TYPE = "text/plain; charset=utf-8"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PublishedWheel:
    """A wheel in the bucket: its key, its SHA-256 (hex) and size in bytes."""

    key: str
    sha256: str
    size: int
    uploaded: bool = True  # False when the key was there already (nothing was sent)


def wheel_digest(path: Path) -> tuple[str, int]:
    """The file's SHA-256 (hex) and size, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as wheel:
        while chunk := wheel.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def wheel_key(file_name: str, sha256: str) -> str:
    """`wheels/<sha256>/<file name>`: the key a wheel with these bytes is stored under."""
    if not WHEEL_FILE_NAME.match(file_name):
        raise ValueError(f"not a wheel file name the templates accept: {file_name!r}")
    if not SHA256_HEX.match(sha256):
        raise ValueError(f"not a sha256 in lowercase hex: {sha256!r}")
    return f"{WHEEL_PREFIX}{sha256}/{file_name}"


def requirements_key(sha256: str) -> str:
    """`wheels/<sha256>/requirements.txt`: where requirements with these bytes are stored."""
    if not SHA256_HEX.match(sha256):
        raise ValueError(f"not a sha256 in lowercase hex: {sha256!r}")
    return f"{WHEEL_PREFIX}{sha256}/{REQUIREMENTS_FILE}"


class S3ArtifactStore:
    """The artifact bucket of one environment, through one S3 client."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def publish_wheel(self, path: Path) -> PublishedWheel:
        """Store the wheel at `path` under its content address, unless it is there already."""
        sha256, size = wheel_digest(path)
        key = wheel_key(path.name, sha256)
        with path.open("rb") as body:
            return self._publish(key, sha256, size, body, WHEEL_CONTENT_TYPE)

    def publish_requirements(self, text: str) -> PublishedWheel:
        """Store a requirements file under its content address, unless it is there already."""
        data = text.encode()
        sha256 = hashlib.sha256(data).hexdigest()
        return self._publish(
            requirements_key(sha256), sha256, len(data), data, REQUIREMENTS_CONTENT_TYPE
        )

    def _publish(
        self, key: str, sha256: str, size: int, body: Any, content_type: str
    ) -> PublishedWheel:
        if self.is_published(key, sha256, size):
            return PublishedWheel(key, sha256, size, uploaded=False)
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
        with self._translated("PutObject", key):
            self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentLength=size,
                ContentType=content_type,
                ChecksumSHA256=checksum,
            )
        return PublishedWheel(key, sha256, size, uploaded=True)

    def is_published(self, key: str, sha256: str, size: int) -> bool:
        """Whether `key` holds these bytes already (read only: one HeadObject).

        An object of another size, or whose S3 checksum is another, is not the wheel (the
        bucket is versioned: uploading it again makes the right bytes the current version).
        """
        with self._translated("HeadObject", key):
            try:
                head = self._client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
            except ClientError as exc:
                # HEAD answers carry no body, so no error code: only the status. 404 is
                # "no such key" (or no such bucket: the PutObject that follows says which).
                if http_status(exc) == 404 or error_code(exc) in ("404", "NoSuchKey"):
                    return False
                raise
        if int(head.get("ContentLength", -1)) != size:
            return False
        stored = head.get("ChecksumSHA256")
        if stored and "-" not in stored:  # `…-N` is a multipart upload's checksum of parts
            return bool(base64.b64decode(stored).hex() == sha256)
        return True

    @contextmanager
    def _translated(self, operation: str, key: str) -> Iterator[None]:
        """`translated_errors` for one call, with S3's own answers said plainly first."""
        what = f"{'checking' if operation == 'HeadObject' else 'uploading'} {self.url(key)}"
        with translated_errors(SERVICE, what):
            try:
                yield
            except ClientError as exc:
                plain = self._plainly(exc, operation, what)
                if plain is None:
                    raise
                raise plain from exc

    def _plainly(self, exc: ClientError, operation: str, what: str) -> ConfigurationError | None:
        code = error_code(exc)
        status = http_status(exc)
        if code == "NoSuchBucket":
            return ConfigurationError(
                f"{what}: there is no bucket {self.bucket!r}; run flotilla init to create "
                "the environment's artifact bucket"
            )
        if code in ("AccessDenied", "403", "AllAccessDisabled") or status == 403:
            objects = f"arn:aws:s3:::{self.bucket}/{WHEEL_PREFIX}*"
            if operation == "PutObject":
                need = f"s3:PutObject on {objects}"
            else:
                # Without s3:ListBucket, S3 answers 403 rather than 404 for a missing key.
                need = f"s3:GetObject on {objects} and s3:ListBucket on arn:aws:s3:::{self.bucket}"
            return ConfigurationError(
                f"{what}: AWS refused {operation} ({code or status}); give your AWS identity {need}"
            )
        return None
