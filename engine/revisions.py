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

Lifecycle hooks (docs/hooks.md) are part of both the id and the binding: a hook runs with
the revision's environment, so a hook added to a copy of a revision must not be able to
open that revision's secrets. A revision without hooks hashes exactly as before hooks
existed, so its id and binding are unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime

from flotilla.engine import validation
from flotilla.engine.errors import ValidationError
from flotilla.engine.ports import SecretBox
from flotilla.engine.records import Hook, Revision, RevisionBinding, SealedEnvironment


def build_revision(
    service: str,
    label: str,
    units: Mapping[str, str | bytes],
    environments: Mapping[str, Mapping[str, str]],
    secret_box: SecretBox,
    created_at: datetime,
    hooks: Mapping[str, Hook] | None = None,
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
    checked_hooks = {name: validation.hook(name, hook) for name, hook in (hooks or {}).items()}
    if checked_hooks:
        hook_environment(checked_envs)  # refused now, not when the first hook runs
    binding = RevisionBinding(label, units_digest(service, checked_units, checked_hooks))
    sealed = secret_box.seal(service, checked_envs, binding) if checked_envs else None
    return Revision(
        service=service,
        id=revision_id(service, checked_units, sealed, checked_hooks),
        label=label,
        units=checked_units,
        environment=sealed,
        created_at=created_at,
        hooks=checked_hooks,
    )


def hook_environment(environments: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The environment a revision's hooks run with: every unit's variables together. A
    name two units set to different values is refused (naming the units, never a value):
    a hook could not tell which one is meant."""
    merged: dict[str, str] = {}
    owner: dict[str, str] = {}
    for unit, variables in sorted(environments.items()):
        for key, value in variables.items():
            if key in merged and merged[key] != value:
                raise ValidationError(
                    f"{key} is set differently in {owner[key]} and {unit}, and the revision "
                    "has hooks, which run with every unit's variables: give it one value, "
                    "or rename it in one unit"
                )
            merged[key], owner[key] = value, unit
    return merged


def revision_id(
    service: str,
    units: Mapping[str, str],
    sealed: SealedEnvironment | None,
    hooks: Mapping[str, Hook] | None = None,
) -> str:
    content: dict[str, object] = {"service": service, "units": dict(sorted(units.items()))}
    if hooks:  # a revision without hooks keeps the id it had before hooks existed
        content["hooks"] = {
            name: {"script": hook.script, "timeout_seconds": hook.timeout_seconds}
            for name, hook in sorted(hooks.items())
        }
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
    found = revision_id(revision.service, revision.units, revision.environment, revision.hooks)
    return found == revision.id


def units_digest(
    service: str, units: Mapping[str, str], hooks: Mapping[str, Hook] | None = None
) -> str:
    """The sha256 of the service, its unit files and hooks: the id of the same revision
    without an environment, and what a sealed environment is bound to (with the label)."""
    return revision_id(service, units, None, hooks)


def binding_for(revision: Revision) -> RevisionBinding:
    """What the revision's sealed environment must have been bound to, to open in it."""
    digest = units_digest(revision.service, revision.units, revision.hooks)
    return RevisionBinding(revision.label, digest)
