"""Where the demo's units run: real systemd where it can be had, else Flotilla's process runtime.

Every simulated instance needs a systemd manager of its own: the units of all instances
have the same names (`flotilla-web-<revision>.service`), so one manager cannot hold two
instances. As root the demo starts one private `systemd --user` per instance, as the tests
do (`systemd_manager.py`). Without root it does not: a private manager needs a mount
namespace, a tmpfs on /run/systemd and cgroups of its own, and the user's own
`systemd --user` could hold only one instance; so units run as local processes, and the
demo says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flotilla.cli.demo.systemd_manager import missing_prerequisites
from flotilla.engine.errors import ConfigurationError

CHOICES = ("auto", "systemd", "process")


@dataclass(frozen=True)
class RuntimeChoice:
    kind: str  # "systemd" or "process"
    reason: str  # why, in words for the narration

    @property
    def description(self) -> str:
        if self.kind == "systemd":
            return (
                "Units run on real systemd: one private `systemd --user` manager per "
                f"instance ({self.reason})"
            )
        return f"Units run as local processes, Flotilla's process runtime ({self.reason})"


def _own_user_manager() -> bool:
    """Whether this user has a running `systemd --user` (its bus socket is there)."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    return runtime_dir is not None and Path(runtime_dir, "bus").exists()


def choose_runtime(asked: str) -> RuntimeChoice:
    """`asked` is one of CHOICES; systemd when it can be had for `auto`, saying why not."""
    if asked == "process":
        return RuntimeChoice("process", "--runtime process")
    missing = missing_prerequisites()
    if not missing:
        return RuntimeChoice("systemd", "started as root, as the tests do")
    if asked == "systemd":
        packages = " (./scripts/setup installs the packages)" if os.geteuid() == 0 else ""
        raise ConfigurationError(
            "--runtime systemd starts a private systemd manager per instance, which needs: "
            + "; ".join(missing)
            + f"{packages}; or use --runtime process"
        )
    if os.geteuid() != 0 and _own_user_manager():
        return RuntimeChoice(
            "process",
            "your own systemd --user could hold only one instance, since every instance's "
            "units have the same names, and a private manager per instance needs root",
        )
    return RuntimeChoice("process", "systemd cannot be had here; missing: " + "; ".join(missing))
