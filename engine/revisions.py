"""Building revisions: validated, sealed, and content-addressed.

A revision's id is the sha256 of what is stored: the service, the unit files and the
SEALED environment (key id, wrapped data key, nonces, ciphertexts, variable names),
never of plaintext values, because a hash of a secret is itself a leak (DESIGN.md).
So adding the same files twice gives the same id when there is no environment, and a
new id when there is one (each sealing uses a fresh data key): by design.

Because the id hashes the ciphertexts, it cannot itself be sealed into them. The sealed
environment is bound instead to what is fixed before sealing (`binding_for`: the label and
the digest of the unit files, the id the revision would have without an environment);
adapters/secrets.py explains what that binding refuses and what the id check adds. The
sealing scheme (2, bound) is hashed into the id; scheme 1 revisions keep their old ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime

from flotilla.engine import validation
from flotilla.engine.errors import ValidationError
from flotilla.engine.ports import SecretBox
from flotilla.engine.records import Revision, RevisionBinding, SealedEnvironment


def build_revision(
    service: str,
    label: str,
    units: Mapping[str, str | bytes],
    environments: Mapping[str, Mapping[str, str]],
    secret_box: SecretBox,
    created_at: datetime,
) -> Revision:
    """Validate everything, seal the environments, and compute the id."""
    validation.service_name(service)
    validation.revision_label(label)
    if not units:
        raise ValidationError("a revision needs at least one unit file (.service, .socket, .timer)")
    checked_units = {
        validation.unit_name(name): validation.unit_file(name, text) for name, text in units.items()
    }
    checked_envs: dict[str, dict[str, str]] = {}
    for unit, variables in environments.items():
        if unit not in checked_units:
            raise ValidationError(
                f"there is an environment for {unit}, but no unit file of that name; "
                f"name the .env file after its unit (units: {', '.join(sorted(checked_units))})"
            )
        checked = validation.environment_variables(unit, variables)
        if checked:
            checked_envs[unit] = checked
    binding = RevisionBinding(label, units_digest(service, checked_units))
    sealed = secret_box.seal(service, checked_envs, binding) if checked_envs else None
    return Revision(
        service=service,
        id=revision_id(service, checked_units, sealed),
        label=label,
        units=checked_units,
        environment=sealed,
        created_at=created_at,
    )


def revision_id(service: str, units: Mapping[str, str], sealed: SealedEnvironment | None) -> str:
    content: dict[str, object] = {"service": service, "units": dict(sorted(units.items()))}
    if sealed is not None:
        environment: dict[str, object] = {
            "key_id": sealed.key_id,
            "encrypted_data_key": sealed.encrypted_data_key.hex(),
            "blobs": {
                unit: [blob.nonce.hex(), blob.ciphertext.hex()]
                for unit, blob in sorted(sealed.blobs.items())
            },
            "variable_names": {
                unit: list(names) for unit, names in sorted(sealed.variable_names.items())
            },
        }
        if sealed.scheme != 1:  # scheme 1 ids are what they always were
            environment["scheme"] = sealed.scheme
        content["environment"] = environment
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def verify_revision_id(revision: Revision) -> bool:
    """Whether the stored content still hashes to the revision's id."""
    return revision_id(revision.service, revision.units, revision.environment) == revision.id


def units_digest(service: str, units: Mapping[str, str]) -> str:
    """The sha256 of the service and its unit files: the id of the same revision without
    an environment, and what a sealed environment is bound to (with the label)."""
    return revision_id(service, units, None)


def binding_for(revision: Revision) -> RevisionBinding:
    """What the revision's sealed environment must have been bound to, to open in it."""
    return RevisionBinding(revision.label, units_digest(revision.service, revision.units))
