"""The one error hierarchy of Flotilla.

Every error says what went wrong and what to do about it, and knows whether
retrying the same call can help (`retryable`), so retry policies never guess
from message text and the CLI can turn any of them into one clear line.
"""

from __future__ import annotations

from typing import Any


class FlotillaError(Exception):
    """Root of every error Flotilla raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(FlotillaError):
    """Something a user gave is malformed; nothing was stored."""


class ItemTooLargeError(ValidationError):
    """A record would exceed DynamoDB's 400 KB item limit."""


class BeingDeletedError(ValidationError):
    """A change asked of a service that is being deleted (`service delete`); nothing was
    stored. Its instances are being unassigned and the record goes when they are done."""


class NotFoundError(FlotillaError):
    """A record that was asked for does not exist."""


class AlreadyExistsError(FlotillaError):
    """A record that must be new exists already."""


class ConflictError(FlotillaError):
    """Another writer changed the record first; `current` is what is stored now.

    Never retried blindly: the caller re-applies its change to `current` (or gives up).
    """

    def __init__(self, message: str, current: Any = None) -> None:
        super().__init__(message)
        self.current = current


class SchemaError(FlotillaError):
    """A stored item was written in a shape this version cannot read."""


class MisfiledItemError(SchemaError):
    """A stored item whose key does not carry the service and instance it claims: planted
    by another service's worker (whose grants reach only keys of its own service), or
    stored under a key of the shape used before keys carried the service. Listings skip
    it with a warning, so that one such item cannot stop a service's rollout."""


class LockLostError(FlotillaError):
    """A lease was not held any more when its holder tried to renew or use it."""


class SecretError(FlotillaError):
    """Encrypting or decrypting an environment failed (wrong key, wrong service, tampering)."""


class TransientError(FlotillaError):
    """A remote service was throttling, unavailable or timed out; the same call may succeed."""

    retryable = True


class ConfigurationError(FlotillaError):
    """Flotilla is not set up the way this command needs (missing region, tables, tool)."""


class UnitFailedError(FlotillaError):
    """A unit did not start or did not stay active; carries systemd's own reason."""

    def __init__(self, message: str, *, unit: str, result: str, exit_status: int | None = None):
        super().__init__(message)
        self.unit = unit
        self.result = result
        self.exit_status = exit_status


class ImagePullError(FlotillaError):
    """A container image could not be pulled (no such image or tag, registry or engine out
    of reach); carries the engine's own reason. The deploy that needed it fails."""
