"""A private `systemd --user` manager for tests, on a machine where systemd is not PID 1.

The manager itself lives in the package (`flotilla.cli.demo.systemd_manager`: the demo
starts one per simulated instance); this module adds what only tests need.

A missing prerequisite is a test failure with what to install, never a skip (README).
"""

from __future__ import annotations

import pytest

from flotilla.cli.demo.systemd_manager import PrivateSystemdManager, missing_prerequisites

__all__ = ["PrivateSystemdManager", "missing_prerequisites", "require_private_manager"]


def require_private_manager() -> None:
    """Fail the test (never skip it) with what to install when a manager cannot be had."""
    missing = missing_prerequisites()
    if missing:
        pytest.fail(
            "a private systemd user manager cannot start here; missing: "
            + "; ".join(missing)
            + " (run the tests as root; ./scripts/setup installs the packages)",
            pytrace=False,
        )
