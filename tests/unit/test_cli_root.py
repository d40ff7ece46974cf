"""The root command answers --help and --version like any well-behaved CLI."""

from importlib.metadata import version

from click.testing import CliRunner

from flotilla.cli import DISTRIBUTION
from flotilla.cli.main import cli


def test_version_prints_the_installed_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"flotilla, version {version(DISTRIBUTION)}"


def test_help_describes_the_tool() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "deploys systemd units" in result.output


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output
