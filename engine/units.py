"""Names and files of the units Flotilla installs: pure functions shared by every runtime.

An installed unit carries a recognisable prefix and its revision, so Flotilla only ever
stops or removes its own units and can tell revisions apart:

    web.service of revision 3f2a9c1b7d4e… → flotilla-web-3f2a9c1b7d4e.service
    worker@.service                       → flotilla-worker-3f2a9c1b7d4e@.service

References between units of the same revision (After=db.service) are rewritten to the
installed names; references to units Flotilla does not own (After=docker.service) are
left alone. A timer or socket keeps the same stem as its service, so activation works.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "flotilla-"
REVISION_CHARS = 12
_INSTALLED = re.compile(
    r"^flotilla-(?P<stem>.+)-(?P<revision>[0-9a-f]{12})(?P<instance>@[^.]*)?"
    r"\.(?P<suffix>service|socket|timer)$"
)
# Settings whose values name other units (systemd.unit(5), systemd.timer(5), systemd.socket(5)).
REFERENCE_KEYS = frozenset(
    {
        "After", "Before", "Requires", "Requisite", "Wants", "BindsTo", "PartOf", "Upholds",
        "Conflicts", "OnFailure", "OnSuccess", "PropagatesReloadTo", "ReloadPropagatedFrom",
        "PropagatesStopTo", "StopPropagatedFrom", "JoinsNamespaceOf", "Unit", "Service",
        "Sockets", "TriggeredBy",
    }
)  # fmt: skip


@dataclass(frozen=True)
class InstalledName:
    unit: str  # the name in the revision, e.g. "web.service"
    revision_prefix: str  # the first 12 characters of the revision id


def installed_name(unit: str, revision_id: str) -> str:
    stem, suffix = unit.rsplit(".", 1)
    base, at, instance = stem.partition("@")
    return f"{PREFIX}{base}-{revision_id[:REVISION_CHARS]}{at}{instance}.{suffix}"


def parse_installed_name(name: str) -> InstalledName | None:
    """The unit and revision of an installed name, or None if Flotilla does not own it."""
    match = _INSTALLED.match(name)
    if match is None:
        return None
    instance = match.group("instance") or ""
    unit = f"{match.group('stem')}{instance}.{match.group('suffix')}"
    return InstalledName(unit=unit, revision_prefix=match.group("revision"))


def is_owned(name: str) -> bool:
    return parse_installed_name(name) is not None


def belongs_to(name: str, revision_id: str) -> bool:
    parsed = parse_installed_name(name)
    return parsed is not None and parsed.revision_prefix == revision_id[:REVISION_CHARS]


def render_unit(
    text: str, revision_id: str, siblings: Mapping[str, str], environment_file: str | None
) -> str:
    """The unit file as installed: sibling references renamed, EnvironmentFile= added.

    `siblings` maps every unit name of the revision to its installed name.
    """
    lines: list[str] = []
    section = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if section == "Service" and environment_file is not None:
                lines.append(f"EnvironmentFile={environment_file}")
                environment_file = None
            section = stripped[1:-1]
        elif "=" in stripped and not stripped.startswith(("#", ";")):
            key, value = stripped.split("=", 1)
            if key.strip() in REFERENCE_KEYS:
                renamed = " ".join(siblings.get(word, word) for word in value.split())
                raw = f"{key.strip()}={renamed}"
        lines.append(raw)
    if environment_file is not None:
        if section != "Service":
            lines.append("[Service]")
        lines.append(f"EnvironmentFile={environment_file}")
    return "\n".join(lines) + "\n"


def render_environment_file(variables: Mapping[str, str]) -> str:
    """systemd EnvironmentFile= syntax; every value double-quoted with its specials escaped."""
    lines = []
    for name in sorted(variables):
        value = variables[name]
        escaped = (
            value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
        )
        lines.append(f'{name}="{escaped}"')
    return "\n".join(lines) + ("\n" if lines else "")
