"""Which units a deploy replaces: what systemd would run for each unit, compared.

A unit is *changed* when its effective unit file or its environment differs between the
running revision and the target:
- its own text, or its environment's variables (plaintext, compared in memory on the
  instance, the only place they are ever decrypted);
- a unit that shares its stem (`web.socket` and `web.service`, `worker@.service` and its
  instances), since systemd pairs them by name and a kept one would activate the old one;
- a sibling it refers to (`After=db.service`) that changed: its installed file names the
  sibling's new installed name, so it is a different file. Found by rendering it both
  ways (`engine.units.render_unit`) until nothing more changes.
An unchanged unit keeps the installed name it runs under (perhaps an older revision's):
nothing about it is stopped, rewritten or restarted, and its main process keeps running.

The comparison is of the files and the variables themselves, in memory, where the
deploy has just opened them; nothing derived from a value (not even a hash, which
DESIGN.md forbids for a plaintext secret) is kept, logged or stored. A digest of the sealed
environment would not do: each revision is sealed under a fresh data key, so its
ciphertext changes although no value did. What the deploy keeps is the outcome, a
`UnitPlan` of names, in its checkpoint.

"Serves traffic": every unit, unless its file says `X-Flotilla-Serves=no` (any section;
systemd ignores `X-` settings). When no changed, added or removed unit serves traffic, the
deploy keeps the instance in its load balancer (no deregistering, draining or registering).
A deploy from or to no revision always moves traffic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from flotilla.engine import units as unit_names
from flotilla.engine.checkpoint import UnitPlan

_NOT_SERVING = re.compile(r"^\s*X-Flotilla-Serves\s*=\s*(no|false|0)\s*$", re.I | re.M)

Environments = Mapping[str, Mapping[str, str]]


def serves_traffic(text: str) -> bool:
    """Whether a unit counts as serving traffic (see the module's docstring)."""
    return _NOT_SERVING.search(text) is None


def running_names(owned: Iterable[str], units: Iterable[str], revision_id: str) -> dict[str, str]:
    """The installed name each unit of the running revision has now: the owned name of that
    unit (its own revision's first, if several are left), else its revision's own name
    (not installed: a rollback installs it under that name)."""
    found: dict[str, list[str]] = {}
    for name in owned:
        parsed = unit_names.parse_installed_name(name)
        if parsed is not None:
            found.setdefault(parsed.unit, []).append(name)
    own_prefix = revision_id[: unit_names.REVISION_CHARS]
    names = {}
    for unit in units:
        candidates = sorted(found.get(unit, []), key=lambda n: own_prefix not in n)
        names[unit] = candidates[0] if candidates else unit_names.installed_name(unit, revision_id)
    return names


def plan_units(
    *,
    before: Mapping[str, str],
    from_units: Mapping[str, str],
    from_environments: Environments,
    to_revision: str | None,
    to_units: Mapping[str, str],
    to_environments: Environments,
) -> UnitPlan:
    """The plan of a deploy from the running units (`before`: unit → installed name, with
    their files and environments) to a target revision's (None: an unassignment)."""
    changed = {
        unit
        for unit, text in to_units.items()
        if unit not in from_units
        or text != from_units[unit]
        or dict(to_environments.get(unit, {})) != dict(from_environments.get(unit, {}))
    }
    removed = sorted(set(from_units) - set(to_units))
    changed |= _same_stem(to_units, {*changed, *removed})
    while True:
        after = _names(to_revision, to_units, before, changed)
        rewritten = {
            unit
            for unit in to_units
            if unit not in changed
            and unit_names.render_unit(unit, to_units[unit], after, None)
            != unit_names.render_unit(unit, from_units[unit], before, None)
        }
        if not rewritten:
            break
        changed |= rewritten
        changed |= _same_stem(to_units, changed)
    moved = [to_units[unit] for unit in changed]
    moved += [from_units[unit] for unit in (*changed, *removed) if unit in from_units]
    traffic_kept = (
        bool(from_units)
        and to_revision is not None
        and not any(serves_traffic(text) for text in moved)
    )
    return UnitPlan(
        before=dict(before),
        after=after,
        changed=tuple(sorted(changed)),
        removed=tuple(removed),
        traffic_kept=traffic_kept,
    )


def _stem(unit: str) -> str:
    return unit.rsplit(".", 1)[0].partition("@")[0]


def _same_stem(units: Iterable[str], changed: Iterable[str]) -> set[str]:
    stems = {_stem(unit) for unit in changed}
    return {unit for unit in units if _stem(unit) in stems}


def _names(
    revision: str | None, units: Mapping[str, str], before: Mapping[str, str], changed: set[str]
) -> dict[str, str]:
    if revision is None:
        return {}
    return {
        unit: before[unit]
        if unit not in changed and unit in before
        else unit_names.installed_name(unit, revision)
        for unit in units
    }
