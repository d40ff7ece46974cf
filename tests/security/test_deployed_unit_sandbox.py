"""Every service unit Flotilla deploys runs in a default sandbox (engine/hardening.py), a
drop-in beside it that the revision's own settings override and one switch turns off.

Scored by `systemd-analyze security` (0 best, 10 worst): a rendered unit with its drop-in,
offline (the analyzer reads `<unit>.d/` beside the file), and the same unit loaded by the
real systemd the tests use. Shown running for real on a private user manager: the process
cannot gain privileges, write the OS, or see the host's /tmp. Of the sandbox, that manager
cannot apply ProtectKernelTunables= and ProtectKernelLogs= here (a container: /proc/sys and
the kernel log cannot be remounted; cli/demo/systemd_manager.py lifts them with a host
drop-in); everything else is applied. The booted machines (tests/machine) run the whole
drop-in on a system manager.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.adapters.systemd import SystemdRuntime
from flotilla.engine.hardening import DEFAULT_SANDBOX, DROP_IN_NAME
from flotilla.engine.units import plan_installation
from tests.support.systemd_manager import PrivateSystemdManager, require_private_manager

REVISION = "3f2a9c1b7d4e" + "c" * 52
# A web server as a revision would write it: nothing about sandboxing.
WEB = "[Unit]\nDescription=web\n[Service]\nType=exec\nExecStart=/usr/bin/python3 -m http.server\n"
# A unit that reports what its process may do, then stays up. It only asks whether it could
# write (access(2) says no on a read-only mount, even to root): it never writes the host.
PROBE = (
    "[Service]\nType=exec\nStandardOutput=append:{out}\nStandardError=append:{out}\n"
    "ExecStart=/bin/sh -c 'grep NoNewPrivs /proc/self/status; echo tmp=$$(ls -A /tmp | wc -l);"
    " for d in /etc /usr /root; do [ -w $$d ] && echo $$d=writable || echo $$d=read-only; done;"
    " exec sleep 300'\n"
)
CONTAINER_CANNOT = ("ProtectKernelTunables", "ProtectKernelLogs")
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d)")


def offline_exposure(folder: Path, unit: str, text: str) -> float:
    """The score of a revision's unit as Flotilla installs it: its file and drop-in."""
    [planned] = plan_installation(REVISION, {unit: text}, {}, "/run/flotilla/env")
    path = folder / planned.installed
    path.write_text(planned.text)
    if planned.drop_in is not None:
        (folder / f"{planned.installed}.d").mkdir()
        (folder / f"{planned.installed}.d" / DROP_IN_NAME).write_text(planned.drop_in)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = EXPOSURE.search(result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def test_the_drop_in_takes_a_plain_unit_from_unsafe_to_medium(tmp_path: Path) -> None:
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    hardened = offline_exposure(tmp_path / "with", "web.service", WEB)
    bare = offline_exposure(tmp_path / "without", "web.service", WEB + "X-Flotilla-Hardening=no\n")

    assert bare == 9.6  # "UNSAFE", as every rendered unit scored before
    assert hardened == 6.5  # "MEDIUM": what is left needs the service's own knowledge
    print(f"\nrendered web.service: {bare} without the drop-in, {hardened} with it")


def test_a_revisions_stricter_setting_wins_over_the_default(tmp_path: Path) -> None:
    strict = WEB + "ProtectSystem=strict\nProtectHome=yes\nPrivateDevices=yes\n"
    assert offline_exposure(tmp_path, "web.service", strict) < 6.5


class Manager:
    """A private user manager applying all of the sandbox this container can."""

    def __init__(self, manager: PrivateSystemdManager, work: Path) -> None:
        self.manager = manager
        self.work = work
        self.runtime = SystemdRuntime(
            bus_address=manager.bus_address, unit_dir=manager.unit_dir, environment_dir=work
        )

    def run(self, text: str) -> tuple[str, dict[str, str], str]:
        """Install and start a probe unit; its name, properties and what it printed."""
        out = self.work / f"probe-{len(list(self.work.iterdir()))}.log"
        [name] = self.runtime.install(REVISION, {"probe.service": text.format(out=out)}, {})
        self.runtime.start([name])
        keys = [key for key, _ in DEFAULT_SANDBOX]
        shown = self.manager.systemctl("show", name, "-p", ",".join(keys))
        properties = dict(line.split("=", 1) for line in shown.stdout.splitlines())
        deadline = time.monotonic() + 30  # the probe prints before it sleeps
        while "/root=" not in (out.read_text() if out.exists() else ""):
            assert time.monotonic() < deadline, "the probe printed nothing"
            time.sleep(0.02)
        return name, properties, out.read_text()

    def online_exposure(self, name: str) -> float:
        result = subprocess.run(
            ["systemd-analyze", "--user", "security", "--no-pager", name],
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "XDG_RUNTIME_DIR": str(self.manager.runtime_dir),
                "DBUS_SESSION_BUS_ADDRESS": self.manager.bus_address,
            },
            capture_output=True,
            text=True,
            check=False,
        )
        found = EXPOSURE.search(result.stdout)
        assert found, result.stdout + result.stderr
        return float(found.group(1))

    def remove(self, name: str) -> None:
        self.runtime.stop([name])
        self.runtime.remove([name])


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    require_private_manager()
    with PrivateSystemdManager(lifted_sandbox=CONTAINER_CANNOT) as private:
        found = Manager(private, tmp_path)
        try:
            yield found
        finally:
            found.runtime.close()


def test_a_deployed_unit_runs_under_its_drop_in_on_real_systemd(manager: Manager) -> None:
    name, properties, printed = manager.run(PROBE)

    lifted = dict.fromkeys(CONTAINER_CANNOT, "no")
    assert properties == {**dict(DEFAULT_SANDBOX), **lifted}
    assert "NoNewPrivs:\t1" in printed
    assert "tmp=0" in printed  # a private, empty /tmp
    assert "/etc=read-only\n/usr=read-only\n/root=read-only\n" in printed
    # What systemd itself makes of the loaded unit: 6.9 here, the two lifted settings
    # counting against it (offline, with all of them: 6.5).
    score = manager.online_exposure(name)
    print(f"\nloaded on the private user manager: {score}")
    assert score <= 7.0
    manager.remove(name)
    assert not (manager.manager.unit_dir / f"{name}.d").exists()


def test_the_revisions_own_values_win_on_real_systemd(manager: Manager) -> None:
    own = PROBE.replace("Type=exec\n", "Type=exec\nProtectSystem=strict\nPrivateTmp=no\n")
    name, properties, printed = manager.run(own)

    assert properties["ProtectSystem"] == "strict"
    assert properties["PrivateTmp"] == "no"
    assert properties["NoNewPrivileges"] == "yes"  # the rest of the default still applies
    assert "tmp=0" not in printed  # the host's /tmp
    assert "/etc=read-only\n/usr=read-only\n/root=read-only\n" in printed
    manager.remove(name)


def test_the_switch_turns_the_sandbox_off_on_real_systemd(manager: Manager) -> None:
    off = PROBE.replace("Type=exec\n", "Type=exec\nX-Flotilla-Hardening=no\n")
    name, properties, printed = manager.run(off)

    assert properties["NoNewPrivileges"] == "no"
    assert properties["ProtectSystem"] == "no"
    assert properties["PrivateTmp"] == "no"
    assert "NoNewPrivs:\t0" in printed
    assert "/etc=writable\n/usr=writable\n/root=writable\n" in printed
    assert not (manager.manager.unit_dir / f"{name}.d").exists()
    score = manager.online_exposure(name)
    print(f"\nloaded on the private user manager, switched off: {score}")
    assert score >= 9.0
    manager.remove(name)
