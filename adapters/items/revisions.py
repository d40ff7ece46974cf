"""Revisions (units and their sealed environment) as stored items, and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flotilla.adapters.items import common
from flotilla.adapters.items.common import Item
from flotilla.engine.records import Hook, Revision, SealedBlob, SealedEnvironment

# 2: the sealed environment carries its sealing scheme (2, bound to its revision; see
# adapters/secrets.py). Revisions without a bound environment are still written as schema 1,
# so an older agent reads them; a bound one it refuses clearly (a newer schema) instead of
# failing to open it. An item without `scheme` is sealed with scheme 1.
# 3: the revision has lifecycle hooks (`hooks`). Only revisions with hooks are written as
# schema 3: an older agent would ignore the hooks (a `validate` that never runs) and find
# the id wrong, so it must refuse them clearly instead.
REVISION_SCHEMA = 3
_BOUND_SCHEMA = 2


def revision_to_item(revision: Revision) -> Item:
    env = revision.environment
    bound = env is not None and env.scheme != 1
    schema = REVISION_SCHEMA if revision.hooks else _BOUND_SCHEMA if bound else 1
    return {
        "schema": schema,
        "service": revision.service,
        "id": revision.id,
        "label": revision.label,
        "units": dict(revision.units),
        "environment": None
        if env is None
        else {
            "key_id": env.key_id,
            "encrypted_data_key": env.encrypted_data_key,
            "blobs": {
                unit: {"nonce": blob.nonce, "ciphertext": blob.ciphertext}
                for unit, blob in env.blobs.items()
            },
            "variable_names": {unit: list(names) for unit, names in env.variable_names.items()},
            **({"scheme": env.scheme} if bound else {}),
        },
        "created_ms": common.ms(revision.created_at),
        **(
            {
                "hooks": {
                    name: {"script": hook.script, "timeout_seconds": hook.timeout_seconds}
                    for name, hook in revision.hooks.items()
                }
            }
            if revision.hooks
            else {}
        ),
    }


def describe_revision(revision: Revision) -> str:
    """A log-safe summary: ids, unit and hook names and variable NAMES, never values."""
    names = {} if revision.environment is None else revision.environment.variable_names
    hooks = f", hooks {sorted(revision.hooks)}" if revision.hooks else ""
    return (
        f"revision {revision.id[:12]} of {revision.service}: units {sorted(revision.units)}, "
        f"variables {names}{hooks}"
    )


def revision_from_item(item: Mapping[str, Any]) -> Revision:
    common.check_schema(item, "revision", REVISION_SCHEMA)

    def build() -> Revision:
        env = item.get("environment")
        created = common.time(item["created_ms"])
        if created is None:
            raise ValueError("created_ms is empty")
        return Revision(
            service=str(item["service"]),
            id=str(item["id"]),
            label=str(item["label"]),
            units={str(k): str(v) for k, v in item["units"].items()},
            environment=None
            if env is None
            else SealedEnvironment(
                key_id=str(env["key_id"]),
                encrypted_data_key=common.binary(env["encrypted_data_key"]),
                blobs={
                    str(unit): SealedBlob(
                        common.binary(blob["nonce"]), common.binary(blob["ciphertext"])
                    )
                    for unit, blob in env["blobs"].items()
                },
                variable_names={
                    str(unit): tuple(str(n) for n in names)
                    for unit, names in env["variable_names"].items()
                },
                scheme=int(env.get("scheme", 1)),
            ),
            created_at=created,
            hooks={
                str(name): Hook(str(hook["script"]), int(hook["timeout_seconds"]))
                for name, hook in (item.get("hooks") or {}).items()
            },
        )

    return common.read("revision", item, build)
