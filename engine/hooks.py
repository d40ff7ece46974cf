"""Lifecycle hooks, the pure part: the transient unit a hook runs as, and what it is given.

A hook of revision 3f2a9c1b7d4e… runs as the transient unit

    validate     →  flotilla-hook-3f2a9c1b7d4e-validate.service

which is deliberately not an owned name (`engine.units.is_owned`: an owned name ends in the
revision's hex): a deploy's unit plan, `stopping` and an unassignment's "nothing left"
check never see a hook's unit, and a hook can never be mistaken for one of the revision's
units. One name per revision and hook: a run left by a crashed agent is found by it and
stopped before the hook runs again.

The environment a hook runs with is every unit's variables together (a clash is refused
at `revision add`, `engine.revisions.hook_environment`), plus FLOTILLA_HOOK,
FLOTILLA_REVISION and FLOTILLA_SERVICE, so one script can serve several hooks.
"""

from __future__ import annotations

from collections.abc import Mapping

from flotilla.engine.ports import HookCommand
from flotilla.engine.records import Revision
from flotilla.engine.revisions import hook_environment
from flotilla.engine.units import REVISION_CHARS, check_revision_id, is_owned

HOOK_PREFIX = "flotilla-hook-"


def hook_unit_name(revision_id: str, hook: str) -> str:
    """`validate` of revision 3f2a9c1b7d4e… → `flotilla-hook-3f2a9c1b7d4e-validate.service`."""
    check_revision_id(revision_id)
    name = f"{HOOK_PREFIX}{revision_id[:REVISION_CHARS]}-{hook}.service"
    if is_owned(name):  # a hook name must never read as one of the revision's units
        raise ValueError(f"hook name {hook!r} would make an owned unit name")
    return name


def is_hook_unit(name: str) -> bool:
    return name.startswith(HOOK_PREFIX) and name.endswith(".service") and not is_owned(name)


def hook_command(
    revision: Revision, hook: str, environments: Mapping[str, Mapping[str, str]]
) -> HookCommand:
    """The run of `revision`'s `hook` with the revision's opened `environments` (secret)."""
    found = revision.hooks[hook]
    environment = {
        **hook_environment(environments),
        "FLOTILLA_HOOK": hook,
        "FLOTILLA_REVISION": revision.id,
        "FLOTILLA_SERVICE": revision.service,
    }
    return HookCommand(
        unit=hook_unit_name(revision.id, hook),
        script=found.script,
        timeout_seconds=found.timeout_seconds,
        environment=environment,
    )


def hook_argv(script: str, path: str) -> list[str]:
    """The command line that runs a hook's script file at `path`: its `#!` line split as
    the kernel splits it (the interpreter, then the rest as one argument), else /bin/sh.
    The interpreter is named rather than the file executed, so a hook runs even where its
    directory is mounted noexec. `engine.validation.hook` checks the `#!` line."""
    if not script.startswith("#!"):
        return ["/bin/sh", path]
    line = script[2:].split("\n", 1)[0].strip(" \t\r")
    interpreter, _, argument = line.partition(" ")
    argument = argument.strip(" \t")
    return [interpreter, *([argument] if argument else []), path]
