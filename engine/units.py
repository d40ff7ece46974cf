"""Names and files of the units Flotilla installs: pure functions shared by every runtime.

An installed unit carries a recognisable prefix and the first 12 hex characters of its
revision, so Flotilla only ever stops or removes its own units and tells revisions apart:

    web.service of revision 3f2a9c1b7d4e…  →  flotilla-web-3f2a9c1b7d4e.service
    worker@.service                        →  flotilla-worker-3f2a9c1b7d4e@.service

`plan_installation` renders a revision for installation: references between units of the
same revision (`After=db.service`) become the installed names of that revision, references
to anything else (`After=docker.service`) stay as they are, and a unit with an environment
gets `EnvironmentFile=` pointing at a file that holds only its own variables. A timer or
socket keeps its service's stem, so activation of the same-stem service keeps working.
A service also gets its default sandbox as a drop-in (`engine.hardening`).

Environment files use systemd's EnvironmentFile= syntax; `parse_environment_file` reads
it the way systemd 252 does (src/basic/env-file.c), so rendering round-trips exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flotilla.engine.errors import ValidationError
from flotilla.engine.hardening import hardening_drop_in
from flotilla.engine.unit_syntax import continues
from flotilla.engine.validation import environment_variables, unit_name

PREFIX = "flotilla-"
REVISION_CHARS = 12
_REVISION = re.compile(r"^[0-9a-f]{12,}$")
_INSTALLED = re.compile(
    rf"^{PREFIX}(?P<base>[^@/]+)-(?P<revision>[0-9a-f]{{{REVISION_CHARS}}})"
    r"(?P<instance>@[^@/]*)?\.(?P<suffix>service|socket|timer)$"
)

# Settings whose values are lists of unit names, by section: systemd.unit(5),
# systemd.service(5), systemd.socket(5), systemd.timer(5), systemd.path(5).
REFERENCE_SETTINGS: Mapping[str, frozenset[str]] = {
    "Unit": frozenset(
        {
            "After", "Before", "Requires", "Requisite", "Wants", "BindsTo", "PartOf",
            "Upholds", "Conflicts", "OnFailure", "OnSuccess", "PropagatesReloadTo",
            "ReloadPropagatedFrom", "PropagatesStopTo", "StopPropagatedFrom",
            "JoinsNamespaceOf",
        }
    ),
    "Service": frozenset({"Sockets"}),
    "Socket": frozenset({"Service"}),
    "Timer": frozenset({"Unit"}),
    "Path": frozenset({"Unit"}),
    "Install": frozenset({"WantedBy", "RequiredBy", "UpheldBy", "Also"}),
}  # fmt: skip
# The section that runs processes and therefore takes EnvironmentFile=, per unit type.
_EXEC_SECTION = {"service": "Service", "socket": "Socket"}


@dataclass(frozen=True)
class InstalledName:
    """What an owned installed name stands for."""

    unit: str  # the name in the revision, e.g. "web.service" ("worker@1.service" for instances)
    revision_prefix: str  # the first 12 hex characters of the revision id


@dataclass(frozen=True)
class PlannedUnit:
    """One unit of a revision, rendered for installation. `environment` is secret."""

    unit: str
    installed: str
    text: str
    environment_file: str | None  # file name (in the runtime's environment directory)
    environment: str | None = field(default=None, repr=False)
    # The default sandbox (engine/hardening.py), written as <installed>.d/DROP_IN_NAME;
    # None for a unit that gets none (not a service, or switched off).
    drop_in: str | None = None


def check_revision_id(revision_id: str) -> str:
    if not isinstance(revision_id, str) or not _REVISION.fullmatch(revision_id):
        raise ValidationError(
            f"invalid revision id {revision_id!r:.80}: expected at least {REVISION_CHARS} "
            "lowercase hex characters (a revision's content hash)"
        )
    return revision_id


def installed_name(unit: str, revision_id: str) -> str:
    """`web.service` of revision 3f2a9c1b7d4e… → `flotilla-web-3f2a9c1b7d4e.service`."""
    unit_name(unit)
    check_revision_id(revision_id)
    stem, suffix = unit.rsplit(".", 1)
    base, at, instance = stem.partition("@")
    return f"{PREFIX}{base}-{revision_id[:REVISION_CHARS]}{at}{instance}.{suffix}"


def parse_installed_name(name: str) -> InstalledName | None:
    """The unit and revision of an installed name, or None if Flotilla does not own it."""
    match = _INSTALLED.fullmatch(name)
    if match is None:
        return None
    instance = match.group("instance") or ""
    unit = f"{match.group('base')}{instance}.{match.group('suffix')}"
    return InstalledName(unit=unit, revision_prefix=match.group("revision"))


def is_owned(name: str) -> bool:
    return parse_installed_name(name) is not None


def belongs_to(name: str, revision_id: str) -> bool:
    """Whether `name` is an owned unit of that revision."""
    parsed = parse_installed_name(name)
    return parsed is not None and parsed.revision_prefix == revision_id[:REVISION_CHARS]


def require_owned(names: Sequence[str]) -> list[str]:
    """The names, if Flotilla owns every one; `ValidationError` before anything is touched."""
    if isinstance(names, str):
        raise ValidationError("expected a list of unit names, not one string")
    foreign = [name for name in names if not is_owned(name)]
    if foreign:
        raise ValidationError(
            f"refusing to touch {', '.join(map(repr, foreign))}: Flotilla only stops or removes "
            f"the units it installed (named '{PREFIX}<unit>-<revision>.<type>')"
        )
    return list(names)


def environment_file_name(installed: str) -> str:
    return f"{installed}.env"


def plan_installation(
    revision_id: str,
    units: Mapping[str, str],
    environments: Mapping[str, Mapping[str, str]],
    environment_dir: str,
    names: Mapping[str, str] | None = None,
) -> list[PlannedUnit]:
    """Every unit of a revision rendered for installation, sorted by installed name.

    `names` gives some units another owned installed name than their revision's own: a
    deploy keeps a unit that did not change under the name it already runs under
    (engine/unit_plan.py), and its siblings refer to it by that name.
    """
    check_revision_id(revision_id)
    strays = sorted(set(environments) - set(units))
    if strays:
        raise ValidationError(
            f"environment given for {', '.join(strays)}, which the revision does not contain; "
            "an environment belongs to exactly one unit of its revision"
        )
    if not environment_dir.startswith("/"):
        raise ValidationError(f"environment directory {environment_dir!r} must be absolute")
    siblings = {unit: installed_name(unit, revision_id) for unit in units}
    for unit, name in (names or {}).items():
        parsed = parse_installed_name(name)
        if unit not in units or parsed is None or parsed.unit != unit:
            raise ValidationError(
                f"cannot install {unit} as {name!r}: not an owned name of a unit of the revision"
            )
        siblings[unit] = name
    planned = []
    for unit, text in units.items():
        variables = environment_variables(unit, environments.get(unit, {}))
        file_name = environment_file_name(siblings[unit]) if variables else None
        path = f"{environment_dir.rstrip('/')}/{file_name}" if file_name else None
        planned.append(
            PlannedUnit(
                unit=unit,
                installed=siblings[unit],
                text=render_unit(unit, text, siblings, path),
                environment_file=file_name,
                environment=render_environment_file(variables) if variables else None,
                drop_in=hardening_drop_in(unit, text),
            )
        )
    return sorted(planned, key=lambda p: p.installed)


def _rename(word: str, siblings: Mapping[str, str]) -> str:
    """A sibling's installed name (also for an instance of a sibling template), else `word`."""
    if word in siblings:
        return siblings[word]
    stem, dot, suffix = word.rpartition(".")
    base, at, instance = stem.partition("@")
    template = f"{base}@.{suffix}"
    if dot and at and instance and template in siblings:
        installed_stem = siblings[template].rpartition(".")[0]
        return f"{installed_stem}{instance}.{suffix}"
    return word


def _rename_words(value: str, siblings: Mapping[str, str]) -> str:
    return re.sub(r"[^\s\\]+", lambda word: _rename(word.group(0), siblings), value)


def render_unit(
    unit: str, text: str, siblings: Mapping[str, str], environment_file: str | None
) -> str:
    """The unit file as installed: sibling references renamed, EnvironmentFile= added.

    `siblings` maps every unit of the revision to its installed name; names not in it
    are left alone. Comments and layout are kept.
    """
    suffix = unit.rsplit(".", 1)[-1]
    exec_section = _EXEC_SECTION.get(suffix)
    environment_line = None
    if environment_file is not None:
        if exec_section is None:
            raise ValidationError(
                f"unit {unit} has an environment, but a .{suffix} unit runs no process; "
                "give the environment to the unit it starts"
            )
        environment_line = f"EnvironmentFile={_escape_specifiers(environment_file)}"
    lines: list[str] = []
    section = ""
    renaming = False  # inside a reference setting continued with a trailing backslash
    for raw in text.splitlines():
        stripped = raw.strip()
        if renaming:
            lines.append(_rename_words(raw, siblings))
            renaming = continues(stripped)
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            if environment_line is not None and section == exec_section:
                _insert_before_trailing_blanks(lines, environment_line)
                environment_line = None
            section = stripped[1:-1]
        elif "=" in stripped and not stripped.startswith(("#", ";")):
            key, value = raw.split("=", 1)
            if key.strip() in REFERENCE_SETTINGS.get(section, ()):
                raw = f"{key}={_rename_words(value, siblings)}"
                renaming = continues(stripped)
        lines.append(raw)
    if environment_line is not None:
        if section != exec_section:
            lines.extend(["", f"[{exec_section}]"])
        _insert_before_trailing_blanks(lines, environment_line)
    return "\n".join(lines) + "\n"


def _insert_before_trailing_blanks(lines: list[str], line: str) -> None:
    at = len(lines)
    while at > 0 and not lines[at - 1].strip():
        at -= 1
    lines.insert(at, line)


def _escape_specifiers(path: str) -> str:
    if any(ord(c) < 32 for c in path) or not path.startswith("/"):
        raise ValidationError(f"environment file path {path!r} must be absolute, one line")
    return path.replace("%", "%%")


# systemd's EnvironmentFile= syntax. Inside double quotes only these four are escaped
# (SHELL_NEED_ESCAPE); everything else, newlines included, is taken literally.
_DOUBLE_QUOTE_ESCAPES = '"\\`$'
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def render_environment_file(variables: Mapping[str, str]) -> str:
    """One `NAME="value"` line per variable, sorted; values round-trip exactly."""
    lines = []
    for name in sorted(variables):
        value = "".join("\\" + c if c in _DOUBLE_QUOTE_ESCAPES else c for c in variables[name])
        lines.append(f'{name}="{value}"')
    return "".join(line + "\n" for line in lines)


def parse_environment_file(text: str) -> dict[str, str]:
    """Variables of an EnvironmentFile=, read exactly as systemd 252's parser reads them.

    A transliteration of `parse_env_file_internal` (src/basic/env-file.c): lines without
    `=` and invalid names are ignored, as systemd does; a later assignment of a name wins.
    """
    whitespace, newline = " \t\n\r", "\n\r"
    found: dict[str, str] = {}
    state = "pre_key"
    key: list[str] = []
    value: list[str] = []
    key_blank: int | None = None  # where the key's trailing whitespace starts
    value_blank: int | None = None  # where an unquoted value's trailing whitespace starts

    def push(chomp: bool) -> None:
        name = "".join(key[:key_blank])
        if _ENV_NAME.fullmatch(name):
            found[name] = "".join(value[:value_blank] if chomp else value)

    for c in text:
        if state == "pre_key":
            if c in "#;":
                state = "comment"
            elif c not in whitespace:
                state, key, key_blank = "key", [c], None
        elif state == "key":
            if c in newline:
                state = "pre_key"
            elif c == "=":
                state, value, value_blank = "pre_value", [], None
            else:
                if c not in whitespace:
                    key_blank = None
                elif key_blank is None:
                    key_blank = len(key)
                key.append(c)
        elif state == "pre_value":
            if c in newline:
                push(chomp=False)
                state = "pre_key"
            elif c == "'":
                state = "single_quote"
            elif c == '"':
                state = "double_quote"
            elif c == "\\":
                state = "value_escape"
            elif c not in whitespace:
                state = "value"
                value.append(c)
        elif state == "value":
            if c in newline:
                push(chomp=True)
                state = "pre_key"
            elif c == "\\":
                state, value_blank = "value_escape", None
            else:
                if c not in whitespace:
                    value_blank = None
                elif value_blank is None:
                    value_blank = len(value)
                value.append(c)
        elif state == "value_escape":
            state = "value"
            if c not in newline:  # an escaped newline continues the line
                value.append(c)
        elif state == "single_quote":
            if c == "'":
                state = "pre_value"
            else:
                value.append(c)
        elif state == "double_quote":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_quote_escape"
            else:
                value.append(c)
        elif state == "double_quote_escape":
            state = "double_quote"
            if c in _DOUBLE_QUOTE_ESCAPES:
                value.append(c)
            elif c != "\n":  # like the shell, keep the backslash before anything else
                value.extend(("\\", c))
        elif state == "comment":
            if c == "\\":
                state = "comment_escape"
            elif c in newline:
                state = "pre_key"
        else:  # comment_escape: in systemd 252 an escaped character continues the comment
            state = "comment"
    if state not in ("pre_key", "key", "comment", "comment_escape"):
        push(chomp=state == "value")
    return found
