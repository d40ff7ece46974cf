"""A click group that imports a command's module only when that command is used.

`flotilla keys` runs on every SSH login (sshd's AuthorizedKeysCommand), so the root group
must not import every command, and with them boto3, OpenTelemetry, moto and the rest. The
group knows each command by its name and where it is defined ("module:attribute"); it
imports that module when the command runs, when its own --help is asked for, or when
anything else asks the group for the command object.

The group's own --help lists every command's one-line help without importing it: the text
is read from the command function's docstring (or its decorator's `help=`/`short_help=`)
in the module's source, the one place that wording lives, and click shortens it exactly as
it shortens a loaded command's help. A command whose listing the source does not give as
plain literals (a custom `cls=`, a computed help) is imported instead: same text, slower.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

# Keywords of click's command decorators that change how a command is listed.
_LISTING_KEYWORDS = frozenset({"help", "short_help", "hidden", "deprecated"})
_DECORATORS = frozenset({"command", "group"})  # click.command(), user.command(), ...


@dataclass(frozen=True)
class LazyCommand:
    """Where a command is defined: `target` is "package.module:attribute". A group may
    also get `subcommands` (name -> target) defined in other modules, added when it loads."""

    target: str
    subcommands: Mapping[str, str] = field(default_factory=dict)


def load(target: str) -> click.Command:
    """Import "module:attribute" and return the click command it names."""
    module_name, _, attribute = target.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command


class LazyGroup(click.Group):
    """A `click.Group` whose commands are imported on first use (see the module's doc)."""

    def __init__(self, *args: Any, lazy: Mapping[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(_load(self.lazy[cmd_name]), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """`click.Group.format_commands`, with a stand-in for each command not imported."""
        listed: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            command = self._listed(ctx, name)
            if command is not None and not command.hidden:
                listed.append((name, command))
        if listed:
            limit = formatter.width - 6 - max(len(name) for name, _ in listed)
            with formatter.section("Commands"):
                formatter.write_dl([(name, c.get_short_help_str(limit)) for name, c in listed])

    def _listed(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            stand_in = stand_in_from_source(name, self.lazy[name].target)
            if stand_in is not None:
                return stand_in
        return self.get_command(ctx, name)


def _load(entry: LazyCommand) -> click.Command:
    command = load(entry.target)
    if entry.subcommands:
        if not isinstance(command, click.Group):
            raise TypeError(f"{entry.target} has subcommands but is not a click group")
        for name, target in entry.subcommands.items():
            command.add_command(load(target), name)
    return command


def stand_in_from_source(name: str, target: str) -> click.Command | None:
    """A command that carries only the listing of `target` (help, short help, hidden,
    deprecated), read from its module's source; None when the source does not say."""
    module_name, _, attribute = target.partition(":")
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    listing = _listings(spec.origin).get(attribute)
    return None if listing is None else click.Command(name, **listing)


@functools.cache
def _listings(path: str) -> dict[str, dict[str, Any]]:
    """The listing keywords of each command function defined at the top of a module."""
    try:
        tree = ast.parse(Path(path).read_bytes(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return {}
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            listing = _listing(node)
            if listing is not None:
                found[node.name] = listing
    return found


def _listing(function: ast.FunctionDef) -> dict[str, Any] | None:
    for decorator in function.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        named = call.func if call is not None else decorator
        if not (isinstance(named, ast.Attribute) and named.attr in _DECORATORS):
            continue
        listing: dict[str, Any] = {}
        for keyword in call.keywords if call is not None else []:
            if keyword.arg is None or keyword.arg == "cls":
                return None  # **options or a custom class: only the import can tell
            if keyword.arg in _LISTING_KEYWORDS:
                try:
                    listing[keyword.arg] = ast.literal_eval(keyword.value)
                except (ValueError, TypeError, SyntaxError):
                    return None
        if listing.get("help") is None:  # as click.command does
            listing["help"] = ast.get_docstring(function, clean=False)
        return listing
    return None
