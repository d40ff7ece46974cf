"""How systemd's parser reads a unit file's settings: shared by everything that reads units."""

from __future__ import annotations


def unit_settings(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every setting, in order, as systemd's parser sees them.

    Lines are stripped; a line ending in an unescaped backslash continues on the next
    one, the backslash becoming a space; comment lines inside a continuation are skipped.
    """
    settings: list[tuple[str, str, str]] = []
    section = ""
    pending: str | None = None  # a setting continued with a trailing backslash
    for raw in [*text.splitlines(), ""]:
        line = raw.strip()
        if pending is not None:
            if line.startswith(("#", ";")):
                continue
            line, pending = pending + line, None
        elif not line or line.startswith(("#", ";")):
            continue
        elif line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if continues(line):
            pending = line[:-1] + " "
        elif "=" in line:
            key, value = line.split("=", 1)
            settings.append((section, key.strip(), value.strip()))
    return settings


def continues(line: str) -> bool:
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1
