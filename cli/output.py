"""Output shared by the commands: `--output text|json`, tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def output_option(command: F) -> F:
    """`--output text|json`, passed to the command as `output`."""
    return click.option(
        "--output",
        "-o",
        "output",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="text for people, json for scripts",
    )(command)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def print_json_line(value: Any) -> None:
    """One JSON document on one line, for output that goes on with more lines (polls)."""
    click.echo(json.dumps(value, sort_keys=True, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; an empty table prints only its headers."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        padded = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(padded).rstrip())


def print_fields(fields: Sequence[tuple[str, Any]]) -> None:
    """`name: value` lines, names aligned."""
    width = max((len(name) for name, _ in fields), default=0)
    for name, value in fields:
        click.echo(f"{name + ':':<{width + 1}} {'' if value is None else value}")
