"""The files a hook's run needs on the instance, shared by the systemd and process runtimes.

Per run, in a 0700 directory owned by the agent (beside the environment directory, on
tmpfs in production: /run/flotilla/hooks): the script (mode 0700) and its environment
(mode 0600 from creation on, systemd's EnvironmentFile= syntax). The environment reaches
the hook through that file, never through a command line or a unit property, which any
local user can read. Both files are removed once the run is over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flotilla.adapters.state_dir import private_directory
from flotilla.adapters.unit_files import write_atomically
from flotilla.engine.ports import HookCommand
from flotilla.engine.units import render_environment_file


@dataclass(frozen=True)
class HookFiles:
    script: Path
    environment: Path


def hook_dir_beside(environment_dir: Path) -> Path:
    """Where hooks' files go: /run/flotilla/env → /run/flotilla/hooks."""
    return environment_dir.parent / "hooks"


def write_hook_files(directory: Path, command: HookCommand) -> HookFiles:
    private_directory(directory, "hook directory")
    files = HookFiles(directory / command.unit, directory / f"{command.unit}.env")
    environment = render_environment_file(command.environment).encode()
    write_atomically(files.environment, environment, 0o600)
    write_atomically(files.script, command.script.encode(), 0o700)
    return files


def remove_hook_files(files: HookFiles) -> None:
    for path in (files.environment, files.script):
        path.unlink(missing_ok=True)
