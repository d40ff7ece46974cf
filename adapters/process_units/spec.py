"""The unit-file settings the process runtime carries out, read the way systemd reads them.

`ServiceSpec.parse` reads a `.service` unit's [Service] section: Type= (simple, exec, idle,
oneshot with RemainAfterExit=), ExecStart= (quoting and C escapes as systemd's
extract_first_word does, the prefixes `-` `@` `:`, the specifiers %% %n %N %p %i %I),
Environment=, EnvironmentFile=, WorkingDirectory=, StandardOutput=/StandardError= and
TimeoutStopSec= (in seconds). A setting the process runtime cannot carry out raises
`UnitSettingError`: the unit would not run as written. `expand_variables` does what
systemd does with `$NAME` and `${NAME}` in a command line, once the environment is known.
Pure: no files, no processes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from flotilla.engine.unit_syntax import unit_settings as parse_settings

_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "s": " "}


class UnitSettingError(Exception):
    """A setting this runtime cannot carry out (the unit would not start as written)."""


@dataclass
class ServiceSpec:
    """What the supervisor needs from a unit file; secrets are read only at start."""

    name: str
    kind: str = "simple"
    commands: list[tuple[str, list[str]]] = field(default_factory=list)  # (prefixes, words)
    environment: dict[str, str] = field(default_factory=dict)
    environment_files: list[str] = field(default_factory=list)
    working_directory: str | None = None
    stdout: str = "journal"
    stderr: str = "inherit"
    remain_after_exit: bool = False
    stop_timeout: float = 10.0

    @classmethod
    def parse(cls, name: str, text: str) -> ServiceSpec:
        spec = cls(name)
        for section, key, value in parse_settings(text):
            if section == "Service":
                spec._take(key, value)
        if spec.kind in ("forking", "notify", "dbus"):
            raise UnitSettingError(f"Type={spec.kind} is not supported by the process runtime")
        if not spec.commands:
            raise UnitSettingError("the service has no ExecStart=")
        if len(spec.commands) > 1 and spec.kind != "oneshot":
            raise UnitSettingError("more than one ExecStart= is only allowed for Type=oneshot")
        return spec

    def _take(self, key: str, value: str) -> None:
        if key == "Type":
            self.kind = value
        elif key == "ExecStart":
            if not value:
                self.commands.clear()
                return
            prefixes = value[: len(value) - len(value.lstrip("-@:+!"))]
            words = [_specifiers(word, self.name) for word in _words(value[len(prefixes) :])]
            if not words:
                raise UnitSettingError("ExecStart= names no command")
            self.commands.append((prefixes, words))
        elif key == "Environment":
            if not value:
                self.environment.clear()
            for word in _words(value):
                variable, equals, setting = _specifiers(word, self.name).partition("=")
                if not equals:
                    raise UnitSettingError(f"Environment= assignment {variable!r} has no '='")
                self.environment[variable] = setting
        elif key == "EnvironmentFile":
            if value:
                self.environment_files.append(_specifiers(value, self.name))
            else:
                self.environment_files.clear()
        elif key == "WorkingDirectory":
            self.working_directory = _specifiers(value, self.name) or None
        elif key in ("StandardOutput", "StandardError"):
            output = _specifiers(value, self.name)
            setattr(self, "stdout" if key == "StandardOutput" else "stderr", output)
        elif key == "RemainAfterExit":
            self.remain_after_exit = value.lower() in ("1", "yes", "true", "on")
        elif key == "TimeoutStopSec" and re.fullmatch(r"\d+(\.\d+)?s?", value):
            self.stop_timeout = float(value.rstrip("s"))


def _words(text: str) -> list[str]:
    """Split like systemd's extract_first_word(EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE)."""
    words: list[str] = []
    word: list[str] | None = None
    quote: str | None = None
    index = 0
    while index < len(text):
        c = text[index]
        index += 1
        if quote is None and c in " \t\n":
            if word is not None:
                words.append("".join(word))
                word = None
            continue
        word = [] if word is None else word
        if c == "\\":
            if index >= len(text):
                raise UnitSettingError(f"trailing backslash in {text!r}")
            escaped, index = _unescape(text, index)
            word.append(escaped)
        elif quote is None and c in "\"'":
            quote = c
        elif c == quote:
            quote = None
        else:
            word.append(c)
    if quote is not None:
        raise UnitSettingError(f"unbalanced quotes in {text!r}")
    if word is not None:
        words.append("".join(word))
    return words


def _unescape(text: str, index: int) -> tuple[str, int]:
    c = text[index]
    if c in _ESCAPES:
        return _ESCAPES[c], index + 1
    for letter, digits, base in (("x", 2, 16), ("u", 4, 16), ("U", 8, 16)):
        if c == letter:
            return chr(int(text[index + 1 : index + 1 + digits], base)), index + 1 + digits
    if c in "01234567":
        return chr(int(text[index : index + 3], 8)), index + 3
    return c, index + 1  # \\ \" \' and anything else stand for themselves


def _specifiers(text: str, name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    prefix, _, instance = stem.partition("@")
    known = {"%": "%", "n": name, "N": stem, "p": prefix, "i": instance, "I": instance}

    def expand(match: re.Match[str]) -> str:
        if match.group(1) not in known:
            raise UnitSettingError(f"the process runtime does not expand %{match.group(1)}")
        return known[match.group(1)]

    return re.sub(r"%(.)", expand, text)


def expand_variables(words: list[str], environment: Mapping[str, str]) -> list[str]:
    """$NAME as a word of its own splits at whitespace; ${NAME} is always one word."""
    expanded: list[str] = []
    for word in words:
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            expanded.extend(environment.get(whole.group(1), "").split())
            continue
        expanded.append(
            re.sub(
                r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                lambda m: "$" if m.group(0) == "$$" else environment.get(m.group(1), ""),
                word,
            )
        )
    return expanded
