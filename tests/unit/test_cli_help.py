"""What `--help` says: every listing of commands says each one whole (click cuts a long
first sentence mid-phrase with "..."), and an option that leaves a setting unchanged does
not claim a default."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from flotilla.cli.main import cli


def groups() -> list[tuple[list[str], click.Group]]:
    """Every group of the command tree, with its path, resolved as a user's command is."""
    found: list[tuple[list[str], click.Group]] = []

    def walk(path: list[str], group: click.Group, context: click.Context) -> None:
        found.append((path, group))
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            if isinstance(command, click.Group):
                walk([*path, name], command, click.Context(command, info_name=name, parent=context))

    walk([], cli, click.Context(cli, info_name="flotilla"))
    return found


@pytest.mark.parametrize("width", [80, 100])
def test_no_listing_cuts_a_description_short(width: int) -> None:
    for path, _group in groups():
        shown = CliRunner().invoke(cli, [*path, "--help"], terminal_width=width)
        assert shown.exit_code == 0, shown.output
        listing = shown.output.split("Commands:", 1)[1].splitlines()
        entries = [line for line in listing if line.startswith("  ") and line.strip()]
        assert entries, path
        for line in entries:
            assert not line.rstrip().endswith("..."), f"flotilla {' '.join(path)}: {line}"
            assert len(line) <= width


def test_update_shows_no_defaults_it_would_not_apply() -> None:
    update = CliRunner().invoke(cli, ["service", "update", "--help"], terminal_width=200).output
    create = CliRunner().invoke(cli, ["service", "create", "--help"], terminal_width=200).output
    assert "[default:" not in update.split("--output")[0]  # the settings' lines
    assert update.count("[unchanged if not given]") == 19
    assert "Failed deploys before a rollout stops [default: 1]" in create
    assert "[unchanged if not given]" not in create
