"""The default sandbox of every service unit Flotilla deploys, as a systemd drop-in.

Beside each installed service unit the runtime writes `<unit>.d/10-flotilla-hardening.conf`
with the settings below: ones an ordinary service does not notice (it keeps its own files,
network, devices, capabilities and user), which take away what a compromised service would
use to reach the rest of the machine (gaining privileges, writing the OS or other users'
homes, the kernel's tunables, modules and log, the clock, the hostname, namespaces).

Why a drop-in rather than lines added to the unit file: the installed unit stays the
revision's text (what the unit plan compares, what `systemctl cat` shows first), and the
defaults sit in a file of their own that says where they come from.

Systemd applies drop-ins after the unit file, so a drop-in setting would beat the unit's
own. Therefore a setting the unit's [Service] section names itself is left out (the
revision's value wins, `ProtectSystem=strict` or `PrivateTmp=no` alike), as are those a
named setting implies more strictly (`DynamicUser=yes` implies `ProtectSystem=strict`,
`ProtectHome=read-only` and `PrivateTmp=yes`; writing `full` would weaken it). One switch in
the unit turns the whole default off: `X-Flotilla-Hardening=no` (or false, off, 0, as
systemd spells a false boolean; any section, like `X-Flotilla-Serves=no`; systemd ignores
`X-` settings).

Later drop-ins win over earlier ones, whatever their directory: an operator's
`systemctl edit` (`override.conf`) or a host-wide `flotilla-.service.d/50-….conf`
(for a host that cannot apply a setting, e.g. a container) sorts after this file.

The drop-in is a pure function of the unit's name and text: the same unit always gets the
same drop-in, so it never changes what the unit plan (engine/unit_plan.py) decides.
"""

from __future__ import annotations

import re

from flotilla.engine.unit_syntax import unit_settings

DROP_IN_NAME = "10-flotilla-hardening.conf"

# (setting, value), in the order written. None of these needs a capability, a device, a
# network or a path that an ordinary service uses; see docs/units.md for what each stops.
DEFAULT_SANDBOX: tuple[tuple[str, str], ...] = (
    ("NoNewPrivileges", "yes"),
    ("PrivateTmp", "yes"),
    ("ProtectSystem", "full"),
    ("ProtectHome", "read-only"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"),
)

# Settings that, when the unit sets them, imply stricter values of some defaults
# (systemd.exec(5), DynamicUser=): those defaults are left to the implication.
_IMPLIES = {"DynamicUser": ("ProtectSystem", "ProtectHome", "PrivateTmp")}
_SWITCHED_OFF = re.compile(r"^\s*X-Flotilla-Hardening\s*=\s*(no|false|off|0)\s*$", re.I | re.M)


def hardening_enabled(text: str) -> bool:
    """Whether the unit leaves the default sandbox on (no `X-Flotilla-Hardening=no`)."""
    return _SWITCHED_OFF.search(text) is None


def hardening_drop_in(unit: str, text: str) -> str | None:
    """The drop-in for a unit of a revision, or None: not a service, or switched off."""
    if not unit.endswith(".service") or not hardening_enabled(text):
        return None
    named = {key for section, key, _ in unit_settings(text) if section == "Service"}
    left_out = set(named)
    for setting, implied in _IMPLIES.items():
        if setting in named:
            left_out.update(implied)
    lines = [f"{key}={value}" for key, value in DEFAULT_SANDBOX if key not in left_out]
    if not lines:
        return None
    header = [
        "# Written by Flotilla: the default sandbox of a deployed service (docs/units.md).",
        "# Settings its unit file names are left out, so the unit's own values win; the",
        "# unit turns all of this off with X-Flotilla-Hardening=no.",
        "[Service]",
    ]
    return "\n".join([*header, *lines]) + "\n"
