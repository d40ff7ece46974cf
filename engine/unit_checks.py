"""What `flotilla revision add` checks in unit files beyond their syntax, pure.

`validation.unit_file` makes sure a file parses; this module finds what systemd would do
with it on a worker, before every instance finds out by failing its deploy:

- **refused by systemd** (`fatal`): a service without `ExecStart=` (only `Type=oneshot`
  may do without, and then needs `ExecStop=` or `SuccessAction=`), several `ExecStart=`
  outside `Type=oneshot`, a command that is neither an absolute path nor a plain program
  name, a timer without any `On…=` setting, a socket without any `Listen…=` setting.
  Such a revision is never stored: its deploy would fail on every instance.
- **ignored by systemd** (not fatal): an unknown key in a section systemd reads (a typo
  such as `ExecStartt=`: systemd logs "Unknown key" and goes on without the setting), or
  an unknown section. Refused too, unless the operator passes `--force` (the workers may
  run a newer systemd that knows the key).

Keys prefixed `X-`, and sections prefixed `X-`, are systemd's own way to carry extra
data and pass. The known keys are systemd 252's (`engine.unit_keys`). Where the machine
running the CLI has `systemd-analyze`, its findings (`cli.unit_verify`) come in as
`Problem`s too, and `refuse` decides for both, in one place.

`advice` finds what systemd runs without complaint but an operator should hear about: a
service that runs as root (no `User=`, no `DynamicUser=yes`) gets every right on the
machine, the agent's included. It is said, never refused.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from flotilla.engine import validation
from flotilla.engine.errors import ValidationError
from flotilla.engine.unit_keys import KNOWN_KEYS

_TYPE_SECTION = {"service": "Service", "socket": "Socket", "timer": "Timer"}
_EXEC_KEYS = frozenset(
    {
        "ExecStart", "ExecStartPre", "ExecStartPost", "ExecCondition", "ExecReload",
        "ExecStop", "ExecStopPost", "ExecStartChown",
    }
)  # fmt: skip
_TIMER_VALUES = frozenset(
    {
        "OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec", "OnUnitInactiveSec",
        "OnCalendar", "OnClockChange", "OnTimezoneChange",
    }
)  # fmt: skip
_EXEC_PREFIXES = "@-:+!"
SHOWN = 2  # problems spelled out in the one line of a refusal; the rest are counted


@dataclass(frozen=True)
class Problem:
    unit: str
    line: int | None  # 1-based, when the problem is one line's
    message: str
    fatal: bool  # systemd refuses the unit; --force cannot help

    def text(self) -> str:
        where = f"{self.unit}, line {self.line}" if self.line else self.unit
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class _Setting:
    section: str
    key: str
    value: str
    line: int


def check_units(units: Mapping[str, str]) -> list[Problem]:
    """Every problem of every unit, in unit-name and line order."""
    return [problem for name in sorted(units) for problem in check_unit(name, units[name])]


def check_unit(name: str, text: str) -> list[Problem]:
    """The problems of one unit file; raises `ValidationError` if it does not even parse."""
    validation.unit_name(name)
    validation.unit_file(name, text)
    kind = name.rsplit(".", 1)[-1]
    own = _TYPE_SECTION.get(kind)
    problems: list[Problem] = []
    sections_seen: set[str] = set()
    settings = list(_settings(text))
    for section, line in _sections(text):
        if section in sections_seen:
            continue
        sections_seen.add(section)
        if section not in ("Unit", "Install", own) and not section.startswith("X-"):
            problems.append(
                Problem(
                    name,
                    line,
                    f"unknown section [{section}] in a .{kind} unit; systemd ignores it and "
                    f"everything in it (a .{kind} unit reads [Unit], [{own}] and [Install])",
                    fatal=False,
                )
            )
    for setting in settings:
        known = KNOWN_KEYS.get(setting.section)
        if (
            known is None
            or setting.section not in ("Unit", "Install", own)
            or setting.key.startswith("X-")
            or setting.key in known
        ):
            continue
        guess = difflib.get_close_matches(setting.key, known, n=1)
        hint = f" (did you mean {guess[0]}=?)" if guess else ""
        problems.append(
            Problem(
                name,
                setting.line,
                f"unknown key {setting.key}= in [{setting.section}]{hint}; systemd ignores "
                "the setting",
                fatal=False,
            )
        )
    own_settings = [s for s in settings if s.section == own]
    if kind == "service":
        problems += _service(name, own_settings)
    elif kind == "timer" and not any(s.key in _TIMER_VALUES for s in own_settings):
        problems.append(
            Problem(
                name,
                None,
                "a timer needs a setting saying when it elapses (OnCalendar=, OnBootSec=, "
                "OnUnitActiveSec=, ...); systemd refuses a timer without one",
                fatal=True,
            )
        )
    elif kind == "socket" and not any(s.key.startswith("Listen") and s.value for s in own_settings):
        problems.append(
            Problem(
                name,
                None,
                "a socket needs a Listen...= setting (ListenStream=, ListenDatagram=, ...); "
                "systemd refuses a socket without one",
                fatal=True,
            )
        )
    if kind in ("service", "socket"):
        problems += _commands(name, own_settings)
    return sorted(problems, key=lambda p: (p.line or 0, p.message))


def advice(units: Mapping[str, str]) -> list[str]:
    """What `revision add` warns about (the module's doc), one line each."""
    found = []
    for name in sorted(units):
        if not name.endswith(".service"):
            continue
        own = {s.key: s.value for s in _settings(units[name]) if s.section == "Service"}
        if not own.get("User") and own.get("DynamicUser", "no").lower() not in TRUE:
            found.append(
                f"{name} has no User= or DynamicUser=yes, so on a worker it runs as root: it "
                "could read the instance's credentials and change what the agent deploys; "
                "give it a user of its own unless it needs root"
            )
    return found


TRUE = frozenset({"yes", "true", "on", "1"})  # systemd's booleans that say yes


def _service(name: str, settings: Sequence[_Setting]) -> list[Problem]:
    service_type = "simple"
    starts: list[_Setting] = []
    stops = success = False
    for setting in settings:
        if setting.key == "Type":
            service_type = setting.value or "simple"
        elif setting.key == "ExecStart":
            starts = [*starts, setting] if setting.value else []  # an empty one resets
        elif setting.key == "ExecStop":
            stops = bool(setting.value)
        elif setting.key == "SuccessAction":
            success = bool(setting.value)
    oneshot = service_type == "oneshot"
    if not starts and not (oneshot and (stops or success)):
        return [
            Problem(
                name,
                None,
                "a service needs ExecStart= (only a Type=oneshot service may do without, "
                "and then needs ExecStop= or SuccessAction=); systemd refuses to start it",
                fatal=True,
            )
        ]
    if len(starts) > 1 and not oneshot:
        return [
            Problem(
                name,
                starts[1].line,
                "a second ExecStart=, which systemd allows only in Type=oneshot services; "
                "systemd refuses to start it",
                fatal=True,
            )
        ]
    return []


def _commands(name: str, settings: Sequence[_Setting]) -> list[Problem]:
    problems = []
    for setting in settings:
        if setting.key not in _EXEC_KEYS or not setting.value:
            continue
        program = setting.value.lstrip(_EXEC_PREFIXES).split(maxsplit=1)
        path = program[0] if program else ""
        if not path or (not path.startswith("/") and "/" in path):
            problems.append(
                Problem(
                    name,
                    setting.line,
                    f"{setting.key}= runs {path[:60]!r}, neither an absolute path nor a "
                    "program name; systemd refuses the unit",
                    fatal=True,
                )
            )
    return problems


def refuse(problems: Iterable[Problem], *, force: bool) -> list[Problem]:
    """Raise a one-line `ValidationError` for problems that stop a revision: any fatal
    one, and the others unless `force`. Returns the problems `force` let through."""
    found = _unique(problems)
    fatal = [p for p in found if p.fatal]
    ignored = [p for p in found if not p.fatal]
    if fatal:
        raise ValidationError(
            f"unit {_listed(fatal)}; fix the unit file (--force cannot help: systemd would "
            "not run it)"
        )
    if ignored and not force:
        raise ValidationError(
            f"unit {_listed(ignored)}; fix the unit file, or pass --force if the workers' "
            "systemd knows better"
        )
    return ignored


def _listed(problems: Sequence[Problem]) -> str:
    shown = "; ".join(p.text() for p in problems[:SHOWN])
    more = len(problems) - SHOWN
    return shown + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else "")


def _unique(problems: Iterable[Problem]) -> list[Problem]:
    """One problem per unit and line (our own and systemd-analyze's often name the same)."""
    kept: dict[tuple[str, int | None, str], Problem] = {}
    for problem in problems:
        # A unit-wide refusal is said once, whoever found it.
        whole = "refused" if problem.fatal else problem.message
        key = (problem.unit, problem.line, "" if problem.line else whole)
        if key not in kept or (problem.fatal and not kept[key].fatal):
            kept[key] = problem
    return sorted(kept.values(), key=lambda p: (p.unit, p.line or 0, p.message))


# --- reading a unit file with line numbers ------------------------------------------------


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(number of the first line, logical line), continuations joined as systemd does."""
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if pending is not None:
            if line.startswith(("#", ";")):
                continue
            start, head = pending
            line, number = head + line, start
            pending = None
        elif not line or line.startswith(("#", ";")):
            continue
        if (len(line) - len(line.rstrip("\\"))) % 2 == 1:
            pending = (number, line[:-1] + " ")
            continue
        yield number, line
    if pending is not None:
        yield pending[0], pending[1].rstrip()


def _sections(text: str) -> Iterator[tuple[str, int]]:
    for number, line in _lines(text):
        if line.startswith("[") and line.endswith("]"):
            yield line[1:-1], number


def _settings(text: str) -> Iterator[_Setting]:
    section = ""
    for number, line in _lines(text):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line:
            key, value = line.split("=", 1)
            yield _Setting(section, key.strip(), value.strip(), number)
