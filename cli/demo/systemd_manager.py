"""A private `systemd --user` manager, on a machine where systemd is not PID 1 (or is).

The demo starts one per simulated instance (every instance's units have the same names,
so they cannot share a manager) and the tests start one per test; both use this module.

The recipe (DESIGN.md, "Tests against real things"): as root, in a fresh cgroup in every
mounted hierarchy (else two managers share the root cgroups and stopping a unit in one
kills the same-named unit of the other), `unshare -m`, a tmpfs on /run/systemd with
/run/systemd/system in it, then `systemd --user` with its own XDG_RUNTIME_DIR and HOME.
Debian's `dbus-user-session` gives it a bus at $XDG_RUNTIME_DIR/bus; the calling process
stays outside the namespace and needs only that socket's path.

The manager lifts, for Flotilla's units only, the parts of their default sandbox
(engine/hardening.py) that it cannot give them (`LIFTED_SANDBOX`), with a drop-in for every
`flotilla-*.service` in its configuration directory (~/.config/systemd/user, the user
manager's /etc/systemd/system), whose name sorts after theirs.

Teardown is SIGTERM (the manager stops every unit); if that does not finish in time,
SIGKILL, then whatever is left in the manager's cgroups is killed and the cgroups removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from flotilla.cli.demo import cgroups
from flotilla.engine.errors import ConfigurationError

SYSTEMD_BINARIES = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
DBUS_USER_SOCKET = "/usr/lib/systemd/user/dbus.socket"

# What of a deployed unit's default sandbox such a manager cannot give it. In a container
# (PID 1 is not systemd) /proc/sys and the kernel log cannot be remounted: a unit with
# ProtectKernelTunables= or ProtectKernelLogs= fails to start (status 226/NAMESPACE). And the
# manager lives under /tmp (its %t, where units' RuntimeDirectory= and the tests' files are),
# which a private /tmp would hide from its units. A booted machine applies all of it.
LIFTED_SANDBOX = ("ProtectKernelTunables", "ProtectKernelLogs", "PrivateTmp")
LIFTED_DROP_IN = Path(".config/systemd/user/flotilla-.service.d/50-private-manager.conf")
JOURNALD_BINARIES = ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")

# Runs inside the new mount namespace (already in the fresh cgroups): mount the tmpfs, exec
# systemd.
# With a journal directory (FLOTILLA_JOURNAL_DIR): a private systemd-journald first, its
# sockets in the private /run/systemd/journal and its files in that directory (bound onto
# /run/log, where journald writes a volatile journal), so units' output reaches a journal.
_INNER_SCRIPT = """
set -e
binary=$1
mount -t tmpfs -o mode=0755 flotilla-private /run/systemd
mkdir /run/systemd/system
if [ -n "$FLOTILLA_JOURNAL_DIR" ]; then
    mkdir -p /run/log
    mount --bind "$FLOTILLA_JOURNAL_DIR" /run/log
    "$FLOTILLA_JOURNALD" </dev/null &
    tries=0
    while [ ! -S /run/systemd/journal/stdout ] && [ $tries -lt 500 ]; do
        sleep 0.01; tries=$((tries + 1))
    done
fi
exec "$binary" --user
"""


def systemd_binary() -> str | None:
    return next((path for path in SYSTEMD_BINARIES if os.access(path, os.X_OK)), None)


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a private manager; empty when everything is there."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (unshare -m and a tmpfs mount need it)")
    if systemd_binary() is None:
        missing.append("systemd: apt-get install systemd")
    if not os.path.exists(DBUS_USER_SOCKET):
        missing.append("the user bus socket: apt-get install dbus-user-session")
    if shutil.which("unshare") is None:
        missing.append("unshare: apt-get install util-linux")
    if not cgroups.hierarchies():
        missing.append("a mounted cgroup file system under /sys/fs/cgroup")
    try:
        import pydbus  # noqa: F401
    except ImportError:
        missing.append("pydbus and PyGObject: pip install -e '.[systemd]' (see setup.cfg)")
    return missing


@dataclass
class PrivateSystemdManager:
    """One private `systemd --user`; use as a context manager, or `start()` and `stop()`.

    `root` should be short: the bus socket lives under it and a Unix socket path has at
    most 107 bytes. By default a fresh directory under /tmp is made and removed.
    """

    root: Path | None = None
    cgroup_prefix: str = "flotilla-test-"  # names its cgroups, so a stray one says whose it is
    journal: bool = False  # run a private systemd-journald too (`journal_lines` reads it)
    start_timeout: float = 15.0
    lifted_sandbox: tuple[str, ...] = LIFTED_SANDBOX
    stop_timeout: float = 10.0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _cgroups: list[Path] = field(default_factory=list, init=False)
    _made_root: bool = field(default=False, init=False)

    @property
    def runtime_dir(self) -> Path:
        assert self.root is not None
        return self.root / "xdg"

    @property
    def home(self) -> Path:
        assert self.root is not None
        return self.root / "home"

    @property
    def unit_dir(self) -> Path:
        """Where this manager finds unit files written for it ($XDG_RUNTIME_DIR/systemd/user)."""
        return self.runtime_dir / "systemd" / "user"

    @property
    def bus_address(self) -> str:
        return f"unix:path={self.runtime_dir / 'bus'}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def journal_dir(self) -> Path:
        """Where the private journald keeps its files (`journalctl -D <this>/journal`)."""
        assert self.root is not None
        return self.root / "log"

    def journal_lines(self, identifier: str) -> list[str]:
        """The messages the private journal holds from `identifier` (SyslogIdentifier=)."""
        shown = subprocess.run(
            ["journalctl", "-D", str(self.journal_dir / "journal"), "--no-pager", "-o", "cat",
             "-t", identifier],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if shown.returncode != 0:
            raise ConfigurationError(
                f"journalctl could not read the private journal: {shown.stderr}"
            )
        return shown.stdout.splitlines()

    @property
    def log_file(self) -> Path:
        assert self.root is not None
        return self.root / "manager.log"

    def __enter__(self) -> PrivateSystemdManager:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        binary = systemd_binary()
        if binary is None:
            raise ConfigurationError("systemd is not installed (apt-get install systemd)")
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="fl-sd-", dir="/tmp"))
            self._made_root = True
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        self._lift_sandbox()
        began = time.monotonic()
        self._cgroups = cgroups.fresh(f"{self.cgroup_prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        environment = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "LANG": "C.UTF-8",
        }
        if self.journal:
            journald = next((p for p in JOURNALD_BINARIES if os.access(p, os.X_OK)), None)
            if journald is None:
                raise ConfigurationError(
                    "systemd-journald is not installed (apt-get install systemd)"
                )
            self.journal_dir.mkdir(exist_ok=True)
            environment |= {
                "FLOTILLA_JOURNAL_DIR": str(self.journal_dir),
                "FLOTILLA_JOURNALD": journald,
            }
        private = ["unshare", "-m", "--propagation", "private", "sh", "-c", _INNER_SCRIPT]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                cgroups.joined(self._cgroups, [*private, "sh", binary]),
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_running(began)
        except BaseException:
            self.stop()
            raise

    def _lift_sandbox(self) -> None:
        drop_in = self.home / LIFTED_DROP_IN
        if not self.lifted_sandbox:
            drop_in.unlink(missing_ok=True)
            return
        drop_in.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{setting}=no" for setting in self.lifted_sandbox]
        drop_in.write_text(
            "# What this private manager cannot give Flotilla's units (systemd_manager.py).\n"
            + "\n".join(["[Service]", *lines])
            + "\n"
        )

    def _wait_until_running(self, began: float) -> None:
        from gi.repository import GLib
        from pydbus import connect

        assert self._process is not None
        deadline = began + self.start_timeout
        last_error = "the bus socket did not appear"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigurationError(
                    f"systemd --user exited with {self._process.returncode} before it answered; "
                    f"its output: {self.log_file.read_text(errors='replace')[-2000:]}"
                )
            if (self.runtime_dir / "bus").exists():
                try:
                    bus = connect(self.bus_address)
                    try:
                        manager = bus.get("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
                        if manager.SystemState in ("running", "degraded"):
                            return
                        last_error = f"the manager is {manager.SystemState}"
                    finally:
                        bus.con.close_sync(None)
                except GLib.Error as exc:
                    last_error = str(exc)
            time.sleep(0.01)
        raise ConfigurationError(
            f"systemd --user did not answer on {self.bus_address} within "
            f"{self.start_timeout} s ({last_error})"
        )

    def stop(self) -> None:
        """SIGTERM (the manager stops its units); SIGKILL and sweep the cgroups if needed."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(self.stop_timeout)
        cgroups.remove(self._cgroups, self.stop_timeout)
        self._cgroups = []
        if self._made_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
            self._made_root = False

    def cgroup_pids(self) -> set[int]:
        """Every process still in the manager's cgroups (itself and its units)."""
        return cgroups.pids_in(self._cgroups)

    def systemctl(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """`systemctl --user …` against this manager."""
        return subprocess.run(
            ["systemctl", "--user", *arguments],
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "XDG_RUNTIME_DIR": str(self.runtime_dir),
                "DBUS_SESSION_BUS_ADDRESS": self.bus_address,
                "SYSTEMD_PAGER": "",
            },
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
